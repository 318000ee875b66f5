#!/usr/bin/env bash
# test/scale.sh [--smoke]: the tests of running past one server, each on
# throwaway servers of its own under tmp/ (127.0.0.1, free ports):
#
#   pgbouncer   test/pgbouncer.sh: the PostgREST suite through PgBouncer in
#               transaction pooling mode, then the pooling tests (PostgREST and
#               a psycopg2 backend)
#   plproxy     test/plproxy.sh 2: every SPEC function through a PL/Proxy proxy
#               over two shard databases (device authorization and the
#               PostgREST pre-request included, with a real PostgREST in front
#               of the proxy), sessions placed by user and routed by the shard
#               tag of their tokens, the proxy grown to four
#   replicas    test/t/012_revoke_remote_apply.pl (revoke_synchronous_commit
#               = remote_apply with a synchronous standby), 200 rounds
#   failover    test/failover.sh: pg_auto_failover, the primary killed under
#               load, every acknowledged operation checked after promotion
#
# --smoke (test/run-all.sh): two of the PostgREST test files through
# PgBouncer instead of all of them, no replicas part (the TAP stage runs it,
# with 60 rounds), and the failover as test/failover.sh --smoke (the same
# setup and checks under a shorter load: under a minute instead of two and a
# half).  Ends with one line "N passed, M failed"; a part that ran nothing
# counts as failed, and so does a failover test that could not run because
# Debian has no pg_auto_failover for this PostgreSQL (said so on its own
# line).  It does not build or install the extension.
set -uo pipefail
cd "$(dirname "$0")/.."
smoke=
[ "${1:-}" = --smoke ] && smoke=1
mkdir -p tmp
passed=0
failed=0
part() { # part NAME COMMAND...: adds the part's closing counts
    local name=$1 line
    shift
    printf '\n==> %s: %s\n' "$name" "$*"
    "$@" 2>&1 | tee "tmp/scale-$name.log"
    line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "tmp/scale-$name.log" | tail -n 1)
    if [[ $line =~ ^([0-9]+)\ passed,\ ([0-9]+)\ failed$ ]] && [ "${BASH_REMATCH[1]}" -gt 0 ]; then
        passed=$((passed + BASH_REMATCH[1])); failed=$((failed + BASH_REMATCH[2]))
        echo "scale $name: $line"
    elif grep -q '^UNAVAILABLE:' "tmp/scale-$name.log"; then
        failed=$((failed + 1))
        echo "scale $name: NOT RUN, $(sed -n 's/^UNAVAILABLE: //p' "tmp/scale-$name.log" | head -n 1); counted as a failure, not as passed"
    else
        failed=$((failed + 1))
        echo "scale $name: ran nothing, or did not finish: counted as a failure"
    fi
}
tap_counts() { # prove's summary as "N passed, M failed"
    local tests fails
    ./test/tap.sh "$@" 2>&1 | tee tmp/scale-tap.log
    tests=$(sed -n 's/^Files=[0-9]*, Tests=\([0-9]*\),.*/\1/p' tmp/scale-tap.log | tail -n 1)
    fails=$(sed -n 's/^Failed \([0-9]*\)\/[0-9]* subtests.*/\1/p' tmp/scale-tap.log | awk '{s += $1} END {print s + 0}')
    if grep -q '^Result: PASS' tmp/scale-tap.log; then echo "${tests:-0} passed, 0 failed"
    else echo "$(( ${tests:-0} - fails )) passed, $(( fails > 0 ? fails : 1 )) failed"; fi
}

if [ -n "$smoke" ]; then
    part pgbouncer ./test/pgbouncer.sh test/postgrest/native.test.mjs test/postgrest/addin.test.mjs
else
    part pgbouncer ./test/pgbouncer.sh
fi
part plproxy ./test/plproxy.sh 2
[ -n "$smoke" ] || ET_REMOTE_APPLY_ROUNDS=${ET_REMOTE_APPLY_ROUNDS:-200} part replicas tap_counts 012_revoke_remote_apply
if [ -n "$smoke" ]; then
    part failover ./test/failover.sh --smoke
else
    part failover ./test/failover.sh
fi
echo
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
