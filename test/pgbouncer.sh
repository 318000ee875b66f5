#!/usr/bin/env bash
# test/pgbouncer.sh [TEST ...]: the PostgREST end-to-end suite through
# PgBouncer in transaction pooling mode (Debian 12 ships 1.18), on a
# throwaway cluster under tmp/pgbouncer/.  Every PostgREST of
# test/postgrest.sh connects to a PgBouncer (two server connections per login
# role: many clients share each backend) with db-prepared-statements = false,
# and the whole suite runs through it; then test/postgrest/pgbouncer.pool.mjs
# (interleaved users, revocation seen by every client at once, the
# per-backend cache shared, API keys, PostgREST's prepared statements) and
# test/pgbouncer.py (a psycopg2 backend: many clients, revocation, reuse, API
# keys, no identity left on a server connection, SQL PREPARE).  Arguments,
# if any, are the test files of test/postgrest/ to run instead of all of them
# (the pooling tests always run).  Ends with "N passed, M failed".
set -euo pipefail
export ET_POOLER=pgbouncer
export ET_POSTGREST_WORKDIR=${ET_POSTGREST_WORKDIR:-pgbouncer}
exec "$(dirname "$0")/postgrest.sh" "$@"
