#!/usr/bin/env bash
# fuzz/run.sh SECONDS WORKDIR [libFuzzer flags...]
#
# Runs fuzz/fuzz_token (built by `make fuzz/fuzz_token`) for SECONDS with
# WORKDIR as the corpus it adds new inputs to and fuzz/corpus/ (the committed
# seeds) read only.  libFuzzer's whole output goes to tmp/fuzz-<WORKDIR's
# name>.log; what is printed is its progress every minute, its final stats
# and, on a finding, the report and how to reproduce it.  Crash inputs go to
# fuzz/artifacts/ (ignored).  Exits with libFuzzer's status.
#
# Used by `make fuzz` (WORKDIR fuzz/corpus-work, kept between runs) and
# `make fuzz-smoke` (a fresh tmp/fuzz-smoke every time).
set -uo pipefail
cd "$(dirname "$0")/.."

secs=${1:?usage: fuzz/run.sh SECONDS WORKDIR [libFuzzer flags...]}
work=${2:?usage: fuzz/run.sh SECONDS WORKDIR [libFuzzer flags...]}
shift 2
max_len=${FUZZ_MAX_LEN:-9000}    # past TOKEN_MAX_LENGTH (8192)

mkdir -p "$work" fuzz/artifacts tmp
name=$(basename "$work")
log=tmp/fuzz-${name#fuzz-}.log
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=0:detect_leaks=1:allocator_may_return_null=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
# PostgreSQL's JSON parser leaves a copy behind on a syntax error: see the file
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$PWD/fuzz/lsan.supp:print_suppressions=0}

echo "fuzz_token: ${secs}s, corpus $work (+ fuzz/corpus read only), max_len $max_len, log $log"
./fuzz/fuzz_token -max_total_time="$secs" -max_len="$max_len" -print_final_stats=1 \
    -artifact_prefix=fuzz/artifacts/ "$@" "$work" fuzz/corpus >"$log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null' INT TERM
# A progress line a minute: the last "#N ... exec/s" line of the log.
while kill -0 "$pid" 2>/dev/null; do
    for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    kill -0 "$pid" 2>/dev/null &&
        grep -aE '^#[0-9]+' "$log" | tail -n 1 | sed 's/^/  /'
done
wait "$pid"
rc=$?

echo "--- final stats"
grep -aE '^#[0-9]+[[:space:]]+DONE|^Done [0-9]+ runs|^stat::' "$log"
if [ "$rc" -ne 0 ]; then
    grep -aE '^#[0-9]+' "$log" | tail -n 1 | sed 's/^/last progress: /'
    echo "--- FINDING (libFuzzer exit status $rc), from $log:"
    sed -n '/^fuzz_token: invariant\|ERROR: \(AddressSanitizer\|LeakSanitizer\|libFuzzer\)\|runtime error:/,$p' "$log" |
        grep -av '^  \(Shadow\|Addressable\|Partially\|Heap\|Freed\|Stack\|Global\|Poisoned\|Container\|Array\|Intra\|ASan\|Left\|Right\)' |
        head -n 80
    art=$(grep -aoE 'Test unit written to [^ ]+' "$log" | tail -n 1 | sed 's/Test unit written to //')
    if [ -n "$art" ]; then
        echo "--- input: $art ($(wc -c <"$art") bytes)"
        od -An -tx1 -v "$art" | head -n 8
        [ "$(wc -c <"$art")" -le 128 ] || echo " ..."
        echo "reproduce: ./fuzz/fuzz_token $art"
    fi
fi
exit "$rc"
