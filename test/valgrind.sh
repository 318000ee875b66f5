#!/usr/bin/env bash
# test/valgrind.sh (make valgrind-check): the regression suite (`make
# installcheck`: sql/ and, where the Makefile lists them, the isolation specs)
# against a throwaway cluster whose postgres runs under valgrind memcheck,
# then a count of the errors in valgrind's logs: those whose stack goes
# through extension_tokens.so ("ours") and the rest.
#
# Tests the extension as installed (it neither builds nor installs).  Exits 0
# when no error goes through extension_tokens.so, 1 when one does, 2 when the
# environment could not be set up.  Regression failures (timeouts under
# valgrind's slowness) are reported but do not decide the exit status.
#
# PostgreSQL's suppression file (src/tools/valgrind.supp) is not in Debian's
# binary packages.  When it is missing, this script takes it from Debian's
# source package for the installed postgresql-$PG_MAJOR with apt-get (as
# root: it adds deb-src entries, derived at run time from the system's own
# Debian apt sources, in /etc/apt/sources.list.d/extension-tokens-src.*) and
# caches it in tmp/pgsrc-$PG_MAJOR/.  VALGRIND_SUPP=FILE uses FILE instead.
# Debian's postgres lacks its static symbols, so a few of that file's entries
# are repeated in a form that matches it (tmp/valgrind/debian-stripped.supp,
# written below).
#
# Environment:
#   VALGRIND_SUPP            suppression file (default: the cached one)
#   VALGRIND_ERROR_EXITCODE  --error-exitcode for postgres processes (default
#                            128, as PostgreSQL's buildfarm does: a backend
#                            with an error then exits as if it had crashed,
#                            so the test that caused it fails; 0 turns it off)
#   VALGRIND_OPTS            more valgrind options (e.g. --track-origins=yes)
#
# Output under tmp/valgrind/: valgrind.<pid>.log per process, server.log,
# pg_regress.log and output/ (pg_regress's results and regression.diffs).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ET_ROOT"

started=$SECONDS
: "${VALGRIND_ERROR_EXITCODE:=128}"
: "${VALGRIND_OPTS:=}"

die2() { echo "valgrind.sh: $*" >&2; exit 2; }

command -v valgrind >/dev/null || die2 "valgrind is not installed (apt-get install valgrind)"
[ -x "$PG_BIN/postgres" ] || die2 "no $PG_BIN/postgres"
pkglibdir=$("$PG_BIN/pg_config" --pkglibdir)
ext_so=$pkglibdir/extension_tokens.so
[ -f "$ext_so" ] || die2 "$ext_so is not installed (see README: ./test/run-all.sh installs it)"

# ---------------------------------------------------------------------------
# PostgreSQL's valgrind.supp, from Debian's source package
# ---------------------------------------------------------------------------

# Prints deb-src entries for the system's Debian apt sources: every enabled
# "deb" stanza of /etc/apt/sources.list.d/debian.sources with Types: deb-src,
# or every "deb" line of /etc/apt/sources.list as "deb-src".  The mirror and
# suites are whatever the system uses; nothing is hard-coded.
deb_src_entries() {
    if [ -f /etc/apt/sources.list.d/debian.sources ]; then
        python3 - /etc/apt/sources.list.d/debian.sources <<'EOF'
import re, sys
text = open(sys.argv[1]).read()
out = []
for stanza in re.split(r"\n\s*\n", text):
    lines = [l for l in stanza.splitlines() if l.strip()]
    fields = {}
    for l in lines:
        m = re.match(r"([A-Za-z-]+):\s*(.*)", l)
        if m:
            fields[m.group(1).lower()] = m.group(2)
    if "deb" not in fields.get("types", "").split():
        continue
    if fields.get("enabled", "yes").lower() == "no":
        continue
    out.append("\n".join("Types: deb-src" if re.match(r"(?i)types:", l) else l
                         for l in lines if not l.lstrip().startswith("#")))
print("\n\n".join(out))
EOF
        echo sources
    elif [ -f /etc/apt/sources.list ]; then
        sed -n 's/^[[:space:]]*deb\([[:space:]]\)/deb-src\1/p' /etc/apt/sources.list
        echo list
    fi
}

fetch_suppressions() { # fetch_suppressions CACHE_DIR  (prints progress on stderr)
    local cache=$1 pkg ver entries kind tarball
    pkg=$(dpkg-query -W -f='${source:Package}' "postgresql-$PG_MAJOR" 2>/dev/null) ||
        { echo "postgresql-$PG_MAJOR is not installed" >&2; return 1; }
    ver=$(dpkg-query -W -f='${source:Version}' "postgresql-$PG_MAJOR")
    if [ "$(id -u)" -ne 0 ]; then
        echo "$cache/valgrind.supp is missing; run this once as root (it uses apt-get)," \
             "or set VALGRIND_SUPP to PostgreSQL's src/tools/valgrind.supp" >&2
        return 1
    fi
    say "fetching valgrind.supp from Debian's source package $pkg $ver" >&2
    if ! apt-cache showsrc "$pkg" 2>/dev/null | grep -q "^Package: $pkg\$"; then
        entries=$(deb_src_entries)
        kind=${entries##*$'\n'}
        entries=${entries%$'\n'*}
        [ -n "$entries" ] && [ "$entries" != "$kind" ] ||
            { echo "no Debian apt source to derive a deb-src entry from" >&2; return 1; }
        printf '# Added by extension_tokens test/valgrind.sh: Debian sources, for\n# apt-get source %s (PostgreSQL'"'"'s src/tools/valgrind.supp).\n%s\n' \
            "$pkg" "$entries" > "/etc/apt/sources.list.d/extension-tokens-src.$kind"
        echo "added /etc/apt/sources.list.d/extension-tokens-src.$kind" >&2
        apt-get update -q >&2
    fi
    mkdir -p "$cache"
    # The installed version first, then whatever other versions the sources
    # offer, newest first (a mirror may list a source it does not serve;
    # valgrind.supp hardly ever changes within a major version).
    local v got=
    for v in "$ver" $(apt-cache showsrc "$pkg" 2>/dev/null | sed -n 's/^Version: //p' | sort -urV); do
        if (cd "$cache" && apt-get source -q --download-only "$pkg=$v" >&2); then
            got=$v
            break
        fi
        rm -f "$cache"/"${pkg}"_*
    done
    [ -n "$got" ] || { echo "could not download any source of $pkg" >&2; return 1; }
    [ "$got" = "$ver" ] || echo "note: valgrind.supp from $pkg $got, not the installed $ver" >&2
    tarball=$(ls "$cache"/"${pkg}"_*.orig.tar.* 2>/dev/null | sort -V | tail -n 1)
    [ -n "$tarball" ] || { echo "no orig tarball in $cache" >&2; return 1; }
    tar -xOf "$tarball" --wildcards --no-anchored 'src/tools/valgrind.supp' \
        > "$cache/valgrind.supp.tmp" && [ -s "$cache/valgrind.supp.tmp" ] ||
        { rm -f "$cache/valgrind.supp.tmp"; echo "valgrind.supp not in $tarball" >&2; return 1; }
    mv "$cache/valgrind.supp.tmp" "$cache/valgrind.supp"
    # Only the one file is kept.
    rm -f "$cache"/"${pkg}"_*
    echo "$pkg $got" > "$cache/valgrind.supp.source"
    echo "$cache/valgrind.supp (from $(basename "$tarball"))" >&2
}

supp=${VALGRIND_SUPP:-$ET_ROOT/tmp/pgsrc-$PG_MAJOR/valgrind.supp}
if [ ! -s "$supp" ]; then
    [ -z "${VALGRIND_SUPP:-}" ] || die2 "VALGRIND_SUPP=$supp does not exist"
    fetch_suppressions "$(dirname "$supp")" || die2 "could not get PostgreSQL's valgrind.supp"
fi

# ---------------------------------------------------------------------------
# A cluster whose postmaster runs under valgrind
# ---------------------------------------------------------------------------
say "starting postgres under valgrind (slow)"
dir=$(et_workdir valgrind)
cp "$supp" "$dir/valgrind.supp"     # readable by the cluster's user wherever dir is
# Debian strips the postgres executable's static symbols (they are in the
# -dbgsym package), so the entries of valgrind.supp that name a static
# function (XLogWrite, write_relcache_init_file) match nothing and their
# false positives, uninitialised padding written to WAL and to the relcache
# init file, come back.  The same entries, anchored on their exported
# callers instead, plus one for a valgrind false positive: glibc's
# __memmove_chk shares its code with __memcpy_chk, whose overlap check then
# fires on the memmove() in RE_compile_and_cache (regexp.c).
pg=$PG_BIN/postgres
cat > "$dir/debian-stripped.supp" <<SUPP
{
   debian_stripped_padding_XLogRecData_write_XLogFlush
   Memcheck:Param
   pwrite64(buf)
   fun:pwrite*
   obj:$pg
   fun:XLogFlush
}
{
   debian_stripped_padding_XLogRecData_write_XLogBackgroundFlush
   Memcheck:Param
   pwrite64(buf)
   fun:pwrite*
   obj:$pg
   fun:XLogBackgroundFlush
}
{
   debian_stripped_padding_XLogRecData_write_XLogInsertRecord
   Memcheck:Param
   pwrite64(buf)
   fun:pwrite*
   obj:$pg
   ...
   fun:XLogInsertRecord
}
{
   debian_stripped_padding_relcache
   Memcheck:Param
   write(buf)
   ...
   fun:fwrite
   obj:$pg
   ...
   fun:RelationCacheInitializePhase3
}
{
   valgrind_memmove_chk_as_memcpy_chk_RE_compile_and_cache
   Memcheck:Overlap
   fun:__memcpy_chk
   fun:RE_compile_and_cache
}
SUPP
chmod 644 "$dir/valgrind.supp" "$dir/debian-stripped.supp"
port=$(et_free_port)
et_as_pg "$PG_BIN/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 \
    --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log"; exit 2; }
{
    echo "listen_addresses = '127.0.0.1'"
    echo "port = $port"
    echo "unix_socket_directories = '$dir'"
    echo "shared_preload_libraries = 'pg_cron,extension_tokens'"
    echo "cron.database_name = 'postgres'"
    echo "fsync = off"
    echo "log_min_messages = warning"
    echo "log_line_prefix = '%m [%p] '"
    echo "regress_extension_tokens.throwaway = on"   # see the Makefile's installcheck-guard
    # under valgrind everything is ~20-50 times slower
    echo "shared_buffers = 32MB"
    echo "max_connections = 30"
    echo "checkpoint_timeout = 30min"
} >> "$dir/data/postgresql.conf"

# shellcheck disable=SC2086
et_as_pg valgrind --tool=memcheck --trace-children=yes --leak-check=no \
    --gen-suppressions=all --suppressions="$dir/valgrind.supp" \
    --suppressions="$dir/debian-stripped.supp" \
    --error-exitcode="$VALGRIND_ERROR_EXITCODE" \
    --error-markers=VALGRINDERROR-BEGIN,VALGRINDERROR-END \
    --num-callers=40 --time-stamp=yes \
    --log-file="$dir/valgrind.%p.log" $VALGRIND_OPTS \
    "$PG_BIN/postgres" -D "$dir/data" >"$dir/server.log" 2>&1 &
vg_pid=$!
ET_CLUSTERS+=("$dir")
export PGHOST=$dir PGPORT=$port PGUSER=postgres PGDATABASE=postgres

for _ in $(seq 600); do
    "$PG_BIN/pg_isready" -q -h "$dir" -p "$port" && break
    kill -0 "$vg_pid" 2>/dev/null || { cat "$dir/server.log"; die2 "postgres exited during startup"; }
    sleep 1
done
"$PG_BIN/pg_isready" -q -h "$dir" -p "$port" || { cat "$dir/server.log"; die2 "postgres did not start in 600 s"; }
echo "up after $((SECONDS - started)) s (port $port, $dir)"

# ---------------------------------------------------------------------------
# The regression suite
# ---------------------------------------------------------------------------
say "make installcheck under valgrind"
out=$dir/output
mkdir -p "$out"
regress_started=$SECONDS
if make -s installcheck PG_CONFIG="$PG_BIN/pg_config" REGRESS_OUTPUTDIR="$out" \
        >"$dir/pg_regress.log" 2>&1; then :; fi
cat "$dir/pg_regress.log"
regress_ok=$(grep -cE '^(ok|test) .* ok( |$)|^ok [0-9]+ ' "$dir/pg_regress.log" || true)
regress_bad=$(grep -cE '\.\.\. FAILED|^not ok' "$dir/pg_regress.log" || true)
echo "pg_regress: $regress_ok ok, $regress_bad failed, $((SECONDS - regress_started)) s" \
     "(diffs: $out/regression.diffs)"

say "stopping postgres"
et_as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -m fast -w -t 600 stop >/dev/null 2>&1 ||
    echo "pg_ctl stop failed; see $dir/server.log" >&2
wait "$vg_pid" 2>/dev/null || true
ET_CLUSTERS=()
# Exit code 1 is an ordinary FATAL exit (and the logical replication
# launcher's at shutdown); $VALGRIND_ERROR_EXITCODE is a valgrind error.
abnormal='exited with exit code ([02-9]|[1-9][0-9]+)|was terminated by signal'
if grep -qE "$abnormal" "$dir/server.log"; then
    echo "postmaster saw processes exit abnormally:"
    grep -E "$abnormal" "$dir/server.log" | head -n 20
fi

# ---------------------------------------------------------------------------
# The errors
# ---------------------------------------------------------------------------
say "valgrind errors"
# Our functions: every text symbol of the installed library (with debug info,
# valgrind names a frame by function and source line, not by object).
nm --defined-only "$ext_so" 2>/dev/null | awk '$2 ~ /^[tT]$/ {print $3}' |
    sed 's/\.\(cold\|part\|isra\|constprop\|lto_priv\)\(\.[0-9]*\)*$//' |
    grep -vxE '_init|_fini|frame_dummy|register_tm_clones|deregister_tm_clones|__do_global_dtors_aux' |
    sort -u > "$dir/ours.syms"
set +e
python3 - "$dir" "$ext_so" <<'EOF'
import glob, os, re, sys
d, so = sys.argv[1], sys.argv[2]
ours = set(open(os.path.join(d, "ours.syms")).read().split())
# "==PID== " or, with --time-stamp=yes, "==DD:HH:MM:SS.mmm PID== "
frame = re.compile(r"^==[^=]*==\s+(?:at|by) 0x[0-9A-Fa-f]+: (\S+) \((.*)\)")
total = 0           # ERROR SUMMARY counts (every occurrence)
contexts_ours, contexts_rest = [], []
logs = sorted(glob.glob(os.path.join(d, "valgrind.*.log")))
for path in logs:
    text = open(path, errors="replace").read()
    for m in re.finditer(r"ERROR SUMMARY: (\d+) errors", text):
        total += int(m.group(1))
    for block in re.findall(r"VALGRINDERROR-BEGIN\n(.*?)VALGRINDERROR-END", text, re.S):
        mine = False
        for line in block.splitlines():
            f = frame.match(line)
            if f and (f.group(1) in ours or os.path.basename(so) in f.group(2)):
                mine = True
                break
        (contexts_ours if mine else contexts_rest).append((path, block))
print(f"processes logged:              {len(logs)}")
print(f"errors (all occurrences):      {total}")
print(f"error contexts, total:         {len(contexts_ours) + len(contexts_rest)}")
print(f"  through extension_tokens.so: {len(contexts_ours)}")
print(f"  elsewhere:                   {len(contexts_rest)}")
for title, items in (("THROUGH extension_tokens.so", contexts_ours),
                     ("elsewhere (first 5)", contexts_rest[:5])):
    for path, block in items:
        print(f"\n--- {title}: {os.path.basename(path)}")
        body = [l for l in block.splitlines() if l.startswith("==")]
        print("\n".join(body[:45]))
sys.exit(1 if contexts_ours else 0)
EOF
rc=$?
set -e
echo
echo "runtime: $((SECONDS - started)) s; logs: $dir/valgrind.*.log"
exit "$rc"
