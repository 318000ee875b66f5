#!/usr/bin/env bash
# test/exporter.sh: the monitoring files work with the real tools.
#
# Debian's prometheus-postgres-exporter is started on 127.0.0.1 with
# monitoring/queries.yaml against a throwaway cluster, connected as a
# monitoring role that has only the grants the README gives; after a known
# sequence of calls (issues, a refresh, a refresh token reused, an
# administrator's revocation, validations, a rotation of the secret),
# /metrics is scraped and each
# expected metric must be there with its value.  monitoring/alerts.yml is
# checked with promtool (Debian's prometheus package).
# Prints "N passed, M failed" last; exit status 0 only if nothing failed.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
# shellcheck source=test/lib.sh
. test/lib.sh

passed=0 failed=0
ok() { echo "ok: $1"; passed=$((passed + 1)); }
not_ok() { echo "not ok: $1"; failed=$((failed + 1)); }
finish() { echo "$passed passed, $failed failed"; [ "$failed" -eq 0 ]; exit $?; }

et_install_packages "${ET_MONITORING_PACKAGES[@]}" ||
    { not_ok "cannot install prometheus-postgres-exporter and prometheus"; finish; }
exporter=/usr/bin/prometheus-postgres-exporter
[ -x "$exporter" ] || { not_ok "no $exporter"; finish; }

say "promtool check rules monitoring/alerts.yml"
if out=$(promtool check rules monitoring/alerts.yml 2>&1) && grep -q 'SUCCESS: 4 rules found' <<<"$out"; then
    ok "promtool: monitoring/alerts.yml has 4 valid rules"
else
    echo "$out"; not_ok "promtool check rules monitoring/alerts.yml"
fi
# a rules file with an error is refused (the check can fail)
if promtool check rules <(sed 's/> 0.10/> > 0.10/' monitoring/alerts.yml) >/dev/null 2>&1; then
    not_ok "promtool accepted a broken rule"
else
    ok "promtool refuses a broken rule"
fi

say "a cluster and a known sequence of calls"
et_build_install || { not_ok "build"; finish; }
dir=$(et_workdir exporter)
secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
et_start_cluster "$dir" "extension_tokens.jwt_secret = '$secret'" \
    "extension_tokens.issue_rate_limit = 0" "extension_tokens.refresh_rate_limit = 0" \
    "extension_tokens.max_sessions_per_user = 0" "extension_tokens.refresh_retry_window = 0" ||
    { not_ok "cluster"; finish; }
q() { psql -X -q -A -t -v ON_ERROR_STOP=1 -c "$1"; }
q 'CREATE EXTENSION extension_tokens' || { not_ok "CREATE EXTENSION"; finish; }
# The monitoring role: the grants of the README's Monitoring section.
q "CREATE ROLE exporter_monitor LOGIN;
   GRANT EXECUTE ON FUNCTION extension_token_stats(), extension_token_event_counts(interval) TO exporter_monitor;"
q 'SELECT extension_token_stats_reset()' >/dev/null
IFS='|' read -r s1 r1 < <(q "SELECT session_id, refresh_token FROM extension_token_issue('exporter_user', 'one')")
IFS='|' read -r s2 a2 < <(q "SELECT session_id, access_token FROM extension_token_issue('exporter_user', 'two')")
IFS='|' read -r s3 a3 < <(q "SELECT session_id, access_token FROM extension_token_issue('exporter_user', 'three')")
q "SELECT count(*) FROM extension_token_refresh('$r1')" >/dev/null     # refreshed: 1
q "SELECT extension_token_refresh('$r1')" >/dev/null 2>&1 || true      # reuse: refused, s1 revoked
q "SELECT extension_token_revoke_session('$s2')" >/dev/null            # administrator: s2 revoked
q "SELECT valid FROM extension_token_validate('$a3')" >/dev/null       # succeeded: 1
q "SELECT valid FROM extension_token_validate('garbage')" >/dev/null   # malformed: 2
q "SELECT valid FROM extension_token_validate('more garbage')" >/dev/null
# a rotation of the secret: the worker records one secret_rotated event
secret2=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
q "ALTER SYSTEM SET extension_tokens.jwt_secret = '$secret2'"
q 'SELECT pg_reload_conf()' >/dev/null
for _ in $(seq 100); do
    [ "$(q "SELECT count(*) FROM extension_token_events WHERE event = 'reuse_detected'")" = 1 ] &&
        [ "$(q "SELECT count(*) FROM extension_token_events WHERE event = 'secret_rotated'")" = 1 ] && break
    sleep 0.1
done

say "prometheus-postgres-exporter with monitoring/queries.yaml"
port=$(et_free_port)
DATA_SOURCE_NAME="postgresql://exporter_monitor@127.0.0.1:$PGPORT/postgres?sslmode=disable" \
    "$exporter" --web.listen-address="127.0.0.1:$port" \
    --extend.query-path=monitoring/queries.yaml >"$dir/exporter.log" 2>&1 &
exporter_pid=$!
trap 'kill "$exporter_pid" 2>/dev/null; et_stop_clusters' EXIT
metrics=$dir/metrics.txt
for _ in $(seq 100); do
    python3 -c "import urllib.request,sys; sys.stdout.write(urllib.request.urlopen('http://127.0.0.1:$port/metrics', timeout=5).read().decode())" \
        >"$metrics" 2>/dev/null && grep -q '^extension_tokens_events_last_5m' "$metrics" && break
    sleep 0.2
done
grep -q '^extension_tokens_' "$metrics" 2>/dev/null ||
    { cat "$dir/exporter.log"; not_ok "no extension_tokens metrics scraped"; finish; }

# metric{labels the line must have} value
expect() {
    if python3 - "$metrics" "$1" "$2" <<'PY'
import re, sys
path, want, value = sys.argv[1], sys.argv[2], float(sys.argv[3])
m = re.fullmatch(r'(\w+)(?:\{(.*)\})?', want)
name, labels = m.group(1), dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ''))
for line in open(path):
    if line.startswith('#'):
        continue
    l = re.fullmatch(r'(\w+)(?:\{(.*)\})? (\S+)\n?', line)
    if not l or l.group(1) != name:
        continue
    have = dict(re.findall(r'(\w+)="([^"]*)"', l.group(2) or ''))
    if all(have.get(k) == v for k, v in labels.items()):
        sys.exit(0 if float(l.group(3)) == value else print(line.strip()) or 1)
sys.exit(1)
PY
    then ok "$1 $2"; else not_ok "$1 $2"; fi
}
expect 'extension_tokens_issued_total' 3
expect 'extension_tokens_refreshes_total{outcome="succeeded"}' 1
expect 'extension_tokens_refreshes_total{outcome="failed"}' 1
expect 'extension_tokens_validations_total{outcome="succeeded"}' 1
expect 'extension_tokens_validations_total{outcome="failed"}' 2
expect 'extension_tokens_validation_failures_total{error="malformed"}' 2
expect 'extension_tokens_validation_failures_total{error="expired"}' 0
expect 'extension_tokens_sessions_count{datname="postgres",state="active"}' 1
expect 'extension_tokens_sessions_count{datname="postgres",state="revoked"}' 2
expect 'extension_tokens_sessions_count{datname="postgres",state="expired"}' 0
expect 'extension_tokens_events_last_5m{datname="postgres",event="issued",reason=""}' 3
expect 'extension_tokens_events_last_5m{event="refreshed"}' 1
expect 'extension_tokens_events_last_5m{event="reuse_detected",reason="refresh_token_already_used"}' 1
expect 'extension_tokens_events_last_5m{event="revoked",reason="refresh_token_reuse"}' 1
expect 'extension_tokens_events_last_5m{event="revoked",reason="admin_revoked"}' 1
expect 'extension_tokens_events_last_5m{event="rate_limited",reason=""}' 0
expect 'extension_tokens_events_last_5m{event="device_approved",reason=""}' 0
# the rotation, its reason (key ids) kept out of the label
expect 'extension_tokens_events_last_5m{event="secret_rotated",reason=""}' 1
# the metadata says the scope
if grep -q '^# HELP extension_tokens_refreshes_total .*cluster-wide' "$metrics" &&
   grep -q '^# HELP extension_tokens_sessions_count .*per database' "$metrics"; then
    ok "HELP lines state the scope"
else
    not_ok "HELP lines state the scope"
fi
# no token in what the exporter publishes
if grep -qF -e "$a2" -e "$a3" -e "$r1" -e "$secret" -e "$secret2" "$metrics"; then
    not_ok "a token or a secret in /metrics"
else
    ok "no token and no secret in /metrics"
fi
finish
