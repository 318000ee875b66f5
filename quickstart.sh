#!/usr/bin/env bash
# Quick start: installs what is missing (Debian packages), builds and installs
# extension_tokens, starts a throwaway PostgreSQL under tmp/quickstart (pg_cron
# preloaded and created, a random 256-bit secret), walks through the token
# lifecycle, and shows the cleanup job the extension scheduled in pg_cron.
# The server is stopped at the end; --keep leaves it running and says how to
# connect.
set -euo pipefail
source "$(dirname "$0")/test/lib.sh"
cd "$ET_ROOT"

keep=false
[ "${1:-}" = "--keep" ] && keep=true

et_install_packages
et_build_install

say "starting a throwaway PostgreSQL $PG_MAJOR"
dir=$(et_workdir quickstart)
secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
# pg_cron runs its jobs in background workers (no libpq login to set up).
et_start_cluster "$dir" "extension_tokens.jwt_secret = '$secret'" \
    "cron.use_background_workers = on" "max_worker_processes = 16"
# pg_cron first, so that CREATE EXTENSION extension_tokens schedules the cleanup.
psql -X -q -c 'CREATE EXTENSION IF NOT EXISTS pg_cron'

say "walkthrough"
psql -X -q -f examples/walkthrough.sql

say "the cleanup job extension_tokens scheduled in pg_cron"
psql -X -c "SELECT jobname, schedule, database, left(command, 40) AS command FROM cron.job
            WHERE jobname LIKE 'extension_tokens%' ORDER BY jobname"

if $keep; then
    ET_CLUSTERS=()
    say "server left running; connect with:"
    echo "  psql -h $PGHOST -p $PGPORT -U postgres postgres"
    echo "stop it with:"
    echo "  $(et_pg_user | sed 's/^postgres$/runuser -u postgres -- /;t;s/.*//')$PG_BIN/pg_ctl -D $dir/data stop"
fi
