#!/usr/bin/env bash
# Quick start: installs what is missing (Debian packages), builds and installs
# extension_tokens, starts a throwaway PostgreSQL under tmp/quickstart (pg_cron
# preloaded, a random 256-bit secret), and walks through the token lifecycle.
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
et_start_cluster "$dir" "extension_tokens.jwt_secret = '$secret'"

say "walkthrough"
psql -X -q -f examples/walkthrough.sql

if $keep; then
    ET_CLUSTERS=()
    say "server left running; connect with:"
    echo "  psql -h $PGHOST -p $PGPORT -U postgres postgres"
    echo "stop it with:"
    echo "  $(et_pg_user | sed 's/^postgres$/runuser -u postgres -- /;t;s/.*//')$PG_BIN/pg_ctl -D $dir/data stop"
fi
