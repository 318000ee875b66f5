#!/usr/bin/env bash
# test/tap.sh: the TAP tests in test/t/*.pl, written with PostgreSQL's own
# PostgreSQL::Test::Cluster, run by prove against the installed extension
# (it does not build or install anything: run `make install`, quickstart.sh
# or test/run-all.sh first).
#
#   001_crash.pl    SIGKILL of a backend in the middle of issue and refresh:
#                   crash recovery leaves no half-written state
#   002_standby.pl  a streaming hot standby validates (and never writes),
#                   sees revocations, refuses to refresh
#   003_hostile.pl  oversized and hostile tokens and user ids never restart
#                   the server, failing statements never put a token in the
#                   server log
#   004_cron.pl     the cleanup job with a real pg_cron, and without it
#   005_dump_restore.pl  sessions, revocations and exchanged refresh tokens
#                   survive pg_dump / pg_restore
#   006_reuse_fail_closed.pl  refresh-token reuse revokes the session with no
#                   free background worker slot, under lock_timeout and
#                   statement_timeout with the row locked, across restarts;
#                   without the preload, refresh refuses (55000)
#   007_secret_files.pl  the secret from files, rotation through them, short,
#                   unreadable and world-readable secrets refused with the
#                   old one kept, no secret in the log
#   008_redaction.pl  with pg_stat_statements and auto_explain preloaded (both
#                   orders): no secret and no token fragment in
#                   pg_stat_statements, the server log or auto_explain's
#                   output; pg_stat_activity shows none after parse
#   009_signing_key_files.pl  ES256 / EdDSA key files at start and reload:
#                   bad files refused with the key in force kept, a refused
#                   file at start leaves no key (55000), no key in the log
#   010_events.pl   LISTEN receives the revocation and reuse payloads (none
#                   for a rollback), one LOG line per security event
#   011_secret_rotated.pl  a secret or signing key changed by a reload, or
#                   while the server was down, is recorded once in every
#                   database with the extension (secret_rotated), never the
#                   key; a database refusing connections is named in the log
#   012_revoke_remote_apply.pl  revoke_synchronous_commit = remote_apply
#                   with a synchronous streaming standby: right after every
#                   kind of revocation its validate says revoked (the lag
#                   without the option is measured and printed)
#   013_verdict_races.pl  a kept verdict sees every revocation: a validation
#                   stopped by gdb between its checks while a reuse is
#                   revoked, a database refusing connections, a two_phase
#                   subscription's COMMIT PREPARED; the inactivity rule while
#                   a use is written; a SIGTERM to the worker (stopped by gdb)
#                   right after a use write commits counts the uses once; the
#                   settings postgresql.conf gives, in force from the start;
#                   a SIGTERM while a revocation waits for a synchronous
#                   standby leaves the refusal waiting for the next worker
#
# Usage: test/tap.sh [TEST ...]     (TEST: 001_crash, t/001_crash.pl, ...)
# Works from any directory.  As root, the clusters run as the postgres OS
# user (initdb refuses root).  Clusters and logs go to tmp/tap/tmp_check
# (or a private directory under /tmp when the repository is not writable by
# that user); they are kept after a failure.  Prints prove's summary and
# exits non-zero when a test fails.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

et_install_packages gdb    # 013_verdict_races.pl stops processes where it must

PGXS_DIR=$("$PG_BIN/pg_config" --pkglibdir)/pgxs
PERL_LIB=$PGXS_DIR/src/test/perl
PG_REGRESS_BIN=$PGXS_DIR/src/test/regress/pg_regress
for f in "$PERL_LIB/PostgreSQL/Test/Cluster.pm" "$PG_REGRESS_BIN"; do
    [ -e "$f" ] || { echo "tap.sh: $f is missing (postgresql-server-dev-$PG_MAJOR?)" >&2; exit 1; }
done
if [ ! -e "$("$PG_BIN/pg_config" --pkglibdir)/extension_tokens.so" ]; then
    echo "tap.sh: extension_tokens is not installed for PostgreSQL $PG_MAJOR (make install)" >&2
    exit 1
fi

# The tests to run: all of test/t/*.pl, or those named on the command line.
tests=()
if [ $# -eq 0 ]; then
    for f in "$ET_ROOT"/test/t/*.pl; do tests+=("$(basename "$f")"); done
else
    for a in "$@"; do
        name=$(basename "$a" .pl).pl
        [ -f "$ET_ROOT/test/t/$name" ] || { echo "tap.sh: no test $ET_ROOT/test/t/$name" >&2; exit 1; }
        tests+=("$name")
    done
fi

# A fresh work directory owned by the cluster user, with a copy of the test
# files it can certainly read; prove runs from there.
dir=$(et_workdir tap)
mkdir -p "$dir/t"
for name in "${tests[@]}"; do cp "$ET_ROOT/test/t/$name" "$dir/t/"; done
[ "$(id -u)" -eq 0 ] && chown -R postgres: "$dir/t"

say "TAP tests (prove) in $dir"
rc=0
(cd "$dir" && et_as_pg env \
    PATH="$PG_BIN:$PATH" \
    PERL5LIB="$PERL_LIB${PERL5LIB:+:$PERL5LIB}" \
    PG_REGRESS="$PG_REGRESS_BIN" \
    TESTDIR="$dir" \
    ET_ROOT="$ET_ROOT" \
    prove --timer -I "$PERL_LIB" "${tests[@]/#/t/}") || rc=$?

# Assertions marked TODO (known defects) do not fail the run; list those
# that failed, so that they are not forgotten.
todo=$(for f in "$dir"/tmp_check/log/regress_log_*; do
           [ -f "$f" ] || continue
           grep -E '^(\[[^]]*\]\([^)]*\) )?not ok [0-9]+ .*# TODO' "$f" |
               sed -E "s/^(\[[^]]*\]\([^)]*\) )?/$(basename "$f" | sed 's/^regress_log_//'): /" || true
       done)
if [ -n "$todo" ]; then
    echo
    echo "Known defects (TODO tests that failed, not counted as failures):"
    printf '%s\n' "$todo" | sed 's/^/  /'
fi

if [ "$rc" -ne 0 ]; then
    echo
    echo "tap.sh: FAILED (prove exit $rc); logs: $dir/tmp_check/log/"
    ls "$dir/tmp_check/log/" 2>/dev/null | sed 's/^/  /' || true
fi
exit "$rc"
