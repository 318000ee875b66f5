#!/usr/bin/env bash
# The whole test suite: installs what is missing, builds and installs the
# extension, then runs each part against a throwaway cluster of its own under
# tmp/ and stops it again.  Ends with one line "N passed, M failed".
#
#   pg_regress   sql/*.sql against expected/*.out (behaviour, errors, privileges,
#                hostile input, operations, upgrade), then the isolation specs
#                in specs/ (races), both through PGXS's installcheck
#   stress       test/stress.py: revocations, a second issue at the session
#                limit, refresh-token reuse and double refreshes, each racing a
#                refresh over 1000 rounds (STRESS_ROUNDS); every token obtained
#                in a round must be dead after it
#   interop      test/interop.py: PyJWT verifies our tokens, ours rejects its
#                forgeries; test/interop_asym.py the same for ES256 and EdDSA
#                with only the public JWK Set, and key rotation
#   tap          test/t/*.pl through test/tap.sh: crashes, a hot standby,
#                hostile input and the server log, pg_cron, dump and restore
#   postgrest    test/postgrest.sh: a real PostgREST 12.0.2 and supabase-js
#                (npm packages pinned in test/postgrest/package-lock.json)
#   clients      test/clients.sh: the TypeScript and Python client libraries
#                (clients/) against a real PostgREST
#   exporter     test/exporter.sh: Debian's prometheus-postgres-exporter with
#                monitoring/queries.yaml, scraped after known calls; promtool
#                checks monitoring/alerts.yml
#   scale        test/scale.sh --smoke: PostgREST and a psycopg2 backend through
#                PgBouncer (transaction pooling), every public function through
#                a PL/Proxy proxy over two shards (and a PostgREST in front of
#                it), and the pg_auto_failover failover under a short load
#
# A stage fails when it passes fewer tests than test/expected-counts says it
# has (a stage that ran nothing, or lost tests, cannot stay green); raise the
# count there when tests are added.  The build is warning-free or fails
# (make WERROR=1; ET_WERROR= turns that off).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ET_ROOT"

export ET_WERROR=${ET_WERROR-1}
et_install_packages
et_build_install

declare -A expected=()
while read -r stage minimum _; do
    case $stage in '' | '#'*) continue ;; esac
    expected[$stage]=$minimum
done < test/expected-counts

passed=0
failed=0
tally() { # tally NAME PASSED FAILED
    local name=$1 ok=$2 bad=$3 minimum=${expected[$1]:-} note=""
    if [ -z "$minimum" ] || [ "$minimum" -lt 1 ]; then
        bad=$((bad + 1)); note=" (FAILED: no minimum for $name in test/expected-counts)"
    elif [ "$ok" -lt "$minimum" ]; then
        bad=$((bad + 1)); note=" (FAILED: test/expected-counts says at least $minimum)"
    elif [ "$ok" -gt "$minimum" ]; then
        note=" (test/expected-counts says $minimum: raise it)"
    fi
    passed=$((passed + ok)); failed=$((failed + bad))
    printf '%-14s %s passed, %s failed%s\n' "$name" "$ok" "$bad" "$note" >> "$ET_ROOT/tmp/summary"
}
mkdir -p tmp && : > tmp/summary

say "pg_regress"
dir=$(et_workdir regress)
et_start_cluster "$dir"
out=$dir/output
mkdir -p "$out"
# make installcheck refuses a server the test scripts did not start: here one
# that says so through the marker's session value.
guard_ok=0 guard_bad=0
if PGOPTIONS="-c regress_extension_tokens.throwaway=off" make -s installcheck-guard \
        PG_CONFIG="$PG_BIN/pg_config" >"$dir/guard.log" 2>&1 ||
        ! grep -q 'refusing to run' "$dir/guard.log"; then
    echo "not ok: make installcheck did not refuse an unmarked server:"; cat "$dir/guard.log"
    guard_bad=1
else
    echo "ok: make installcheck refuses an unmarked server"; guard_ok=1
fi
rc=0
make -s installcheck PG_CONFIG="$PG_BIN/pg_config" REGRESS_OUTPUTDIR="$out" 2>&1 |
    tee "$dir/pg_regress.log" || rc=$?
ok=$(grep -cE '^(ok|test) .* ok( |$)|^ok [0-9]+ ' "$dir/pg_regress.log" || true)
bad=$(grep -cE '\.\.\. FAILED|^not ok' "$dir/pg_regress.log" || true)
[ -f "$out/regression.diffs" ] && { cat "$out/regression.diffs"; }
# pg_regress that failed to start, or stopped early, failed.
if [ "$rc" -ne 0 ] && [ "$bad" -eq 0 ]; then
    echo "make installcheck exited with status $rc without a failed test: counted as a failure"
    bad=1
fi
tally "pg_regress+iso" "$((ok + guard_ok))" "$((bad + guard_bad))"
et_stop_clusters

say "stress (races)"
dir=$(et_workdir stress)
secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
et_start_cluster "$dir" "extension_tokens.jwt_secret = '$secret'"
if /usr/bin/python3 test/stress.py | tee "$dir/stress.log"; then :; fi
line=$(tail -n 1 "$dir/stress.log")
if [[ $line =~ ^([0-9]+)\ passed,\ ([0-9]+)\ failed$ ]]; then
    tally stress "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}"
else
    tally stress 0 1
fi
et_stop_clusters

say "interop (PyJWT)"
dir=$(et_workdir interop)
secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
et_start_cluster "$dir" "extension_tokens.jwt_secret = '$secret'"
psql -X -q -c 'CREATE EXTENSION extension_tokens'
if ET_SECRET=$secret /usr/bin/python3 test/interop.py | tee "$dir/interop.log"; then :; fi
line=$(tail -n 1 "$dir/interop.log")
if [[ $line =~ ^([0-9]+)\ passed,\ ([0-9]+)\ failed$ ]]; then
    tally interop "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}"
else
    tally interop 0 1
fi
et_stop_clusters

say "interop, ES256 and EdDSA (PyJWT with only the JWK Set)"
dir=$(et_workdir interop_asym)
secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
# Throwaway signing keys, made as an operator would (README), mode 0600.
for k in es1 es2; do
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$dir/$k.pem" 2>/dev/null
done
openssl genpkey -algorithm ed25519 -out "$dir/ed1.pem" 2>/dev/null
chmod 600 "$dir"/*.pem
[ "$(id -u)" -eq 0 ] && chown postgres: "$dir"/*.pem
et_start_cluster "$dir" "extension_tokens.jwt_secret = '$secret'"
if ET_KEY_DIR=$dir /usr/bin/python3 test/interop_asym.py | tee "$dir/interop_asym.log"; then :; fi
line=$(tail -n 1 "$dir/interop_asym.log")
if [[ $line =~ ^([0-9]+)\ passed,\ ([0-9]+)\ failed$ ]]; then
    tally interop_asym "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}"
else
    tally interop_asym 0 1
fi
et_stop_clusters

say "TAP (PostgreSQL::Test::Cluster)"
if ./test/tap.sh 2>&1 | tee tmp/tap.log; then :; fi
tests=$(sed -n 's/^Files=[0-9]*, Tests=\([0-9]*\),.*/\1/p' tmp/tap.log | tail -n 1)
tfail=$(sed -n 's/^Failed \([0-9]*\)\/[0-9]* subtests.*/\1/p' tmp/tap.log | awk '{s += $1} END {print s + 0}')
if grep -q '^Result: PASS' tmp/tap.log; then
    tally tap "${tests:-0}" 0
else
    tally tap "$(( ${tests:-0} - tfail ))" "$(( tfail > 0 ? tfail : 1 ))"
fi

say "PostgREST end to end"
if ./test/postgrest.sh 2>&1 | tee tmp/postgrest.log; then :; fi
line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' tmp/postgrest.log | tail -n 1 || true)
if [[ $line =~ ^([0-9]+)\ passed,\ ([0-9]+)\ failed$ ]]; then
    tally postgrest "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}"
else
    tally postgrest 0 1
fi

say "client libraries (TypeScript, Python) against PostgREST"
if ./test/clients.sh 2>&1 | tee tmp/clients.log; then :; fi
line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' tmp/clients.log | tail -n 1 || true)
if [[ $line =~ ^([0-9]+)\ passed,\ ([0-9]+)\ failed$ ]]; then
    tally clients "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}"
else
    tally clients 0 1
fi

say "monitoring: postgres_exporter with monitoring/queries.yaml, promtool"
if ./test/exporter.sh 2>&1 | tee tmp/exporter.log; then :; fi
line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' tmp/exporter.log | tail -n 1 || true)
if [[ $line =~ ^([0-9]+)\ passed,\ ([0-9]+)\ failed$ ]]; then
    tally exporter "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}"
else
    tally exporter 0 1
fi

say "scaling (PgBouncer, PL/Proxy, failover): test/scale.sh --smoke"
if ./test/scale.sh --smoke 2>&1 | tee tmp/scale.log; then :; fi
line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' tmp/scale.log | tail -n 1 || true)
if [[ $line =~ ^([0-9]+)\ passed,\ ([0-9]+)\ failed$ ]]; then
    tally scale "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}"
else
    tally scale 0 1
fi

say "summary"
cat tmp/summary
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
