#!/usr/bin/env bash
# test/plproxy.sh [SHARDS]: extension_tokens sharded on PL/Proxy, on one
# throwaway cluster under tmp/plproxy/: SHARDS shard databases (default 2, a
# power of 2) made with examples/plproxy/shard.sql and extension_tokens.shard_tag
# = their partition number, and a proxy database made with
# examples/plproxy/proxy.sql.  Then test/plproxy.py calls every function
# through the proxy as PostgREST's roles would, and checks where each
# session landed.  Ends with "N passed, M failed".  Needs root (or the
# packages of test/lib.sh and postgresql-MAJOR-plproxy installed) and the
# extension installed (make install, or test/run-all.sh).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ET_ROOT"
shards=${1:-2}

et_install_packages "postgresql-$PG_MAJOR-plproxy"
dir=$(et_workdir "${ET_PLPROXY_WORKDIR:-plproxy}")
secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
et_start_cluster "$dir" "extension_tokens.jwt_secret = '$secret'" \
    "extension_tokens.admin_roles = 'service_role'" \
    "extension_tokens.refresh_retry_window = 0" "max_connections = 200"
et_plproxy_setup "$shards" proxy shard
export ET_PROXY_DB=proxy ET_SHARD_PREFIX=shard ET_SHARDS=$shards
/usr/bin/python3 test/plproxy.py
