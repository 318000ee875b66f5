#!/usr/bin/env bash
# bench/profile.sh OUT.md: where a backend's time goes, sampled with perf
# (software clock, call graphs), for the paths the benchmark measures.  It
# uses the server and data set that bench/run.sh has set up (PGHOST, PGPORT,
# PGUSER, PGDATABASE in the environment, the bench schema loaded) and writes
# a markdown section per path: the share of samples per library, and the
# inclusive share of the functions that make up the path.
#
# Each path is one statement run twice in one psql, perf following its
# backend during the second run (the first pays the page faults of a new
# backend's first touch of the shared buffers):
#   validate, cold: tokens this backend has not verified before (the
#       verified-token cache misses: full HMAC, jansson parse, jsonb build)
#   validate, warm: 100 tokens validated over and over (the cache hits)
#   issue: new users, one pair each
#   refresh: issued refresh tokens, each exchanged once
# then validate and the index-lookup statement under pgbench -c2 with the
# whole machine sampled, and, when BENCH_HTTP_BASE names bench/run.sh's
# PostgREST, validate and the no-op rpcs over HTTP, the whole machine sampled
# (see the end).  BENCH_ONLY=write: issue and refresh only.
set -euo pipefail
out=$1
only=${BENCH_ONLY:-all}
raw=${BENCH_RAW:-$(dirname "$out")}
mkdir -p "$raw"

if ! perf record -e cpu-clock -o /dev/null -- true >/dev/null 2>&1; then
    printf '## Profile\n\nperf could not sample on this machine; no profile.\n' > "$out"
    exit 0
fi

# profile NAME SQL: runs SQL in a fresh backend while perf samples it.
profile() {
    local name=$1 sql=$2 pid perf_pid data=$raw/perf-$1.data
    coproc PSQL { psql -X -A -t -q -v ON_ERROR_STOP=1 2>&1; }
    echo "SELECT pg_backend_pid();" >&"${PSQL[1]}"
    read -r pid <&"${PSQL[0]}"
    # once unsampled: the new backend's first touch of the shared buffers
    echo "$sql" >&"${PSQL[1]}"
    read -r result <&"${PSQL[0]}"
    perf record -e cpu-clock -F 2999 -g -p "$pid" -o "$data" >/dev/null 2>&1 &
    perf_pid=$!
    sleep 0.5
    echo "$sql" >&"${PSQL[1]}"
    read -r result <&"${PSQL[0]}"
    kill -INT "$perf_pid"
    wait "$perf_pid" || true
    echo '\q' >&"${PSQL[1]}"
    wait "$PSQL_PID" 2>/dev/null || true
    # (each awk below stops printing by itself: a `head` closing the pipe
    # early would kill perf report or awk with SIGPIPE, which pipefail and
    # set -e turn into this script's exit)
    {
        printf '### %s\n\n`%s` (result: %s)\n\n' "$name" "$sql" "$result"
        printf '| library | share of samples |\n|---|---:|\n'
        perf report -i "$data" --no-children --sort dso --stdio 2>/dev/null |
            awk '/^ +[0-9.]+%/ && !/--/ && k++ < 8 { printf "| %s | %s |\n", $2, $1 }'
        printf '\n| function (inclusive) | share of samples |\n|---|---:|\n'
        perf report -i "$data" --children --sort symbol --stdio -g none 2>/dev/null |
            awk -v pat="$FUNCS" '/^ +[0-9.]+%/ { sym=$NF; if ($NF == "-") sym=$(NF-2);
                 if (sym ~ pat && k++ < 40) printf "| %s | %s |\n", sym, $1 }'
        printf '\n| function (self), the top 15 | share of samples |\n|---|---:|\n'
        perf report -i "$data" --no-children --sort symbol --stdio -g none 2>/dev/null |
            awk '/^ +[0-9.]+%/ && k++ < 15 { sym=$NF; if ($NF == "-") sym=$(NF-2); printf "| %s | %s |\n", sym, $1 }'
        printf '\n'
    } >> "$out"
}

printf '## Profile (perf, cpu-clock samples of the backend)\n\n' > "$out"

# The fixed costs of one cold validation, in C with no SQL around them: the
# two digests, and the jansson parse of a sample token's payload that
# the validator's rules prescribe (src/token.c; the one step the verified-token cache
# exists to skip).
gcc -O2 -Wall -o "$raw/primitives-json" "$(dirname "$0")/primitives.c" -lcrypto -ljansson -ljwt
psql -X -A -t -c "SELECT convert_from(bench.b64url_decode(split_part(access, '.', 2)), 'UTF8')
                  FROM bench.tok ORDER BY id LIMIT 1" > "$raw/payload.json"
read -r tok_len sig_len < <(psql -X -A -t -F ' ' -c "SELECT length(access),
    length(access) - length(split_part(access, '.', 3)) - 1 FROM bench.tok ORDER BY id LIMIT 1")
"$raw/primitives-json" "$tok_len" "$sig_len" 1 "$raw/payload.json" > "$raw/primitives-json.txt"
{
    printf '### The fixed costs of a cold validation (and of signing), in C (µs per operation)\n\n'
    printf '| operation | µs |\n|---|---:|\n'
    awk '$1 == "sha256_us" { printf "| SHA-256 of the %s-byte token |", T; print " " $2 " |" }
         $1 == "hmac_keyed_us" { printf "| HMAC-SHA256 of its %s-byte signing input, key set once |", S; print " " $2 " |" }
         $1 == "jansson_parse_us" { printf "| jansson json_loadb of its payload %s %s, JSON_REJECT_DUPLICATES |", $3, $4; print " " $2 " |" }
         $1 == "libjwt_sign_us" { print "| (issue) libjwt: build and sign a token with that payload: jwt_new, jwt_add_grants_json, jwt_set_alg, jwt_encode_str | " $2 " |" }' \
        T="$tok_len" S="$sig_len" "$raw/primitives-json.txt"
    printf '\n'
} >> "$out"
sample=$(psql -X -A -t -c "SELECT count(*) FROM bench.tok")
FUNCS='^(extension_token_validate|validate_token|token_verify_access|StorageLookupSession|StorageTouchSession|claims_jsonb|validation_result|json_loadb|token_payload_parse|pg_parse_json|jsonb_build_visit|SPI_execute_plan|_SPI_execute_plan|_SPI_pquery|standard_ExecutorStart|standard_ExecutorRun|standard_ExecutorEnd|ExecInitNode|ExecModifyTable|ExecInsert|ExecUpdate|ExecInsertIndexTuples|ExecConstraints|ExecOnConflictUpdate|AfterTriggerEndQuery|CommandCounterIncrement|extension_token_issue|extension_token_refresh|mint_access|mint_refresh|token_sign_access|token_make_refresh|seal_retry_box|token_seal|jwt_encode_str|StorageIssue|StorageRefresh|StorageFindRefresh|_bt_first|_bt_doinsert|heap_insert|heap_update|XLogInsert|palloc|AllocSetAlloc|MemoryContextReset)$'
if [ "$only" != write ]; then
profile "validate, cold (first sight of $sample tokens)" \
    "SELECT count(*) FILTER (WHERE (extension_token_validate(access)).valid) FROM bench.tok;"
profile "validate, warm (100 tokens, 1000 times each)" \
    "SELECT count(*) FILTER (WHERE (extension_token_validate(access)).valid) FROM bench.tok, generate_series(1, 1000) WHERE id <= 100;"
fi
profile "issue (5000 new users)" \
    "SELECT count((extension_token_issue(gen_random_uuid()::text)).access_token) FROM generate_series(1, 5000) g;"
# refresh: 2 x 5000 issued pairs, each statement exchanges the next 5000
psql -X -q -v ON_ERROR_STOP=1 >/dev/null <<'SQL'
DROP TABLE IF EXISTS bench.prof_pool;
DROP SEQUENCE IF EXISTS bench.prof_block;
CREATE TABLE bench.prof_pool AS
SELECT g.i AS id, p.refresh_token AS refresh
FROM generate_series(1, 10000) g(i), LATERAL extension_token_issue('bench profile ' || g.i) p;
CREATE UNIQUE INDEX ON bench.prof_pool (id);
CREATE SEQUENCE bench.prof_block MINVALUE 0 START 0;
SQL
profile "refresh (5000 issued refresh tokens, each exchanged once)" \
    "WITH b AS MATERIALIZED (SELECT nextval('bench.prof_block') * 5000 AS base) SELECT count(*) FROM b, generate_series(1, 5000) g, LATERAL (SELECT refresh FROM bench.prof_pool WHERE id = b.base + g.g) r, LATERAL extension_token_refresh(r.refresh) p WHERE p.access_token IS NOT NULL;"
[ "$only" != write ] || exit 0

# validate against the index-lookup statement at pgbench -c2 -j2, the whole
# machine sampled (perf -a) while each runs: CPU time per transaction by
# program and library, so that the extra time of validate over the lookup
# shows where it goes.  BENCH_SCRIPTS holds validate_ext.pgb and lookup.pgb
# (bench/run.sh's), BENCH_SECONDS the length of each run.
scripts=${BENCH_SCRIPTS:?}
secs=${BENCH_SECONDS:-10}
for s in lookup validate_ext; do
    # a first run unsampled: new backends' first touch of the shared buffers
    pgbench -n -M prepared -c 2 -j 2 -T 3 -f "$scripts/$s.pgb" > /dev/null 2>&1
    perf record -a -e cpu-clock -F 1999 -o "$raw/perf-c2-$s.data" -- \
        pgbench -n -M prepared -c 2 -j 2 -T "$secs" -f "$scripts/$s.pgb" > "$raw/perf-c2-$s.txt" 2>&1
    perf report -i "$raw/perf-c2-$s.data" --no-children --sort comm,dso --stdio 2>/dev/null \
        > "$raw/perf-c2-$s.report"
done
python3 - "$raw" >> "$out" <<'PY'
import re, sys
raw = sys.argv[1]
def load(name):
    txt = open(f"{raw}/perf-c2-{name}.txt").read()
    txns = int(re.search(r"number of transactions actually processed: (\d+)", txt).group(1))
    tps = float(re.search(r"^tps = ([\d.]+)", txt, re.M).group(1))
    rep = open(f"{raw}/perf-c2-{name}.report").read()
    m = re.search(r"# Samples: ([\d.]+)([KM]?)", rep)
    samples = float(m.group(1)) * {"": 1, "K": 1e3, "M": 1e6}[m.group(2)]
    us = {}
    for line in rep.splitlines():
        mm = re.match(r"\s+([\d.]+)%\s+(\S+)\s+(.+?)\s*$", line)
        if mm and mm.group(2) != "swapper":       # swapper: the idle loop
            key = (mm.group(2), mm.group(3))
            us[key] = us.get(key, 0) + float(mm.group(1)) / 100 * samples / 1999 * 1e6 / txns
    return us, tps
lk, lk_tps = load("lookup")
ex, ex_tps = load("validate_ext")
print("### validate and the index-lookup statement at pgbench -c2 -j2, the whole machine sampled\n")
print(f"CPU µs per transaction (perf -a, cpu-clock at 1999 Hz; idle left out). Under perf: "
      f"lookup {lk_tps:,.0f} TPS, validate {ex_tps:,.0f} TPS ({100 * ex_tps / lk_tps:.0f}%).\n")
print("| program | library | lookup | validate | validate − lookup |\n|---|---|---:|---:|---:|")
keys = sorted(set(lk) | set(ex), key=lambda k: -(ex.get(k, 0) + lk.get(k, 0)))
for k in keys:
    a, b = lk.get(k, 0), ex.get(k, 0)
    if max(a, b) >= 0.05:
        print(f"| {k[0]} | {k[1]} | {a:.2f} | {b:.2f} | {b - a:+.2f} |")
print(f"| **all** | | **{sum(lk.values()):.2f}** | **{sum(ex.values()):.2f}** | **{sum(ex.values()) - sum(lk.values()):+.2f}** |\n")
PY

# validate over PostgREST against its no-op rpcs, the whole machine sampled
# while wrk runs each (the same wrk command and Lua scripts as bench/run.sh):
# CPU µs per request by program and library, and the idle share, so that
# the gap to the no-op shows whose time it is (wrk, PostgREST, PostgreSQL,
# the kernel).  BENCH_HTTP_BASE is PostgREST's base URL; BENCH_SCRIPTS holds
# run.sh's wrk scripts.
[ -n "${BENCH_HTTP_BASE:-}" ] || exit 0
http=(noop - "$BENCH_HTTP_BASE/rpc/bench_noop"
      noop_arg "$scripts/noop_arg.lua" "$BENCH_HTTP_BASE/"
      noop_shape "$scripts/noop_shape.lua" "$BENCH_HTTP_BASE/"
      validate_ext "$scripts/validate_ext.lua" "$BENCH_HTTP_BASE/")
for ((i = 0; i < ${#http[@]}; i += 3)); do
    name=${http[i]}
    opt=(); [ "${http[i + 1]}" = - ] || opt=(-s "${http[i + 1]}")
    perf record -a -e cpu-clock -F 1999 -o "$raw/perf-http-$name.data" -- \
        wrk -t1 -c8 -d"${secs}s" "${opt[@]}" "${http[i + 2]}" > "$raw/perf-http-$name.txt" 2>&1
    ! grep -q 'Non-2xx' "$raw/perf-http-$name.txt" || { echo "wrk $name: non-2xx answers" >&2; exit 1; }
    perf report -i "$raw/perf-http-$name.data" --no-children --sort comm,dso --stdio 2>/dev/null \
        > "$raw/perf-http-$name.report"
done
python3 - "$raw" >> "$out" <<'PY'
import re, sys
raw = sys.argv[1]
names = ["noop", "noop_arg", "noop_shape", "validate_ext"]
heads = {"noop": "no-op", "noop_arg": "argument-only no-op", "noop_shape": "same-shape no-op",
         "validate_ext": "validate"}
def program(comm):
    if comm.startswith("postgres:") or comm == "postgres":
        return "PostgreSQL"
    if comm.startswith("postgrest") or comm.startswith("ghc_"):
        return "PostgREST"
    if comm == "wrk":
        return "wrk"
    return "other"
def load(name):
    txt = open(f"{raw}/perf-http-{name}.txt").read()
    reqs = int(re.search(r"(\d+) requests in", txt).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", txt).group(1))
    rep = open(f"{raw}/perf-http-{name}.report").read()
    m = re.search(r"# Samples: ([\d.]+)([KM]?)", rep)
    samples = float(m.group(1)) * {"": 1, "K": 1e3, "M": 1e6}[m.group(2)]
    us, idle = {}, 0.0
    for line in rep.splitlines():
        mm = re.match(r"\s+([\d.]+)%\s+(\S+)\s+(.+?)\s*$", line)
        if not mm:
            continue
        if mm.group(2) == "swapper":                   # the idle loop
            idle += float(mm.group(1))
            continue
        key = (program(mm.group(2)), mm.group(3))
        us[key] = us.get(key, 0) + float(mm.group(1)) / 100 * samples / 1999 * 1e6 / reqs
    return us, rps, idle
d = {n: load(n) for n in names}
print("### validate and the no-op rpcs over PostgREST (wrk -t1 -c8), the whole machine sampled\n")
print("CPU µs per request (perf -a, cpu-clock at 1999 Hz; idle left out). Under perf: "
      + "; ".join(f"{heads[n]} {d[n][1]:,.0f} req/s (idle {d[n][2]:.0f}% of the samples)" for n in names)
      + f"; validate/no-op {100 * d['validate_ext'][1] / d['noop'][1]:.0f}%.\n")
print("| program | library | " + " | ".join(heads[n] for n in names) + " | validate − no-op |")
print("|---|---|" + "---:|" * (len(names) + 1))
keys = sorted(set().union(*(d[n][0] for n in names)),
              key=lambda k: -sum(d[n][0].get(k, 0) for n in names))
for k in keys:
    v = [d[n][0].get(k, 0) for n in names]
    if max(v) >= 0.5:
        print(f"| {k[0]} | {k[1]} | " + " | ".join(f"{x:.1f}" for x in v) + f" | {v[-1] - v[0]:+.1f} |")
for prog in ("wrk", "PostgREST", "PostgreSQL", "other"):
    v = [sum(x for k, x in d[n][0].items() if k[0] == prog) for n in names]
    print(f"| *{prog}, all* | | " + " | ".join(f"{x:.1f}" for x in v) + f" | {v[-1] - v[0]:+.1f} |")
v = [sum(d[n][0].values()) for n in names]
print("| **all** | | " + " | ".join(f"**{x:.1f}**" for x in v) + f" | **{v[-1] - v[0]:+.1f}** |\n")
PY
