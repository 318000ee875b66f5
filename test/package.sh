#!/usr/bin/env bash
# test/package.sh [MAJOR]: builds the Debian package (debian/, pg_buildext)
# for PostgreSQL MAJOR (15: Debian 12, the default; 17: Debian 13) in a
# Debian root with the build dependencies, installs the .deb with apt in a
# clean Debian root, and runs a smoke test against the installed package:
# the dependencies resolve, CREATE EXTENSION (pg_cron schedules the cleanup),
# issue, validate, refresh, revoke, and DROP EXTENSION leaves no job.
# Ends with one line "N passed, M failed"; the .deb is left in tmp/package/.
#
# Roots under tmp/package/ (the bare one and the build one are cached; the
# clean one is made afresh from the bare one each time).  Needs root.
# Exit status: 0 passed, 1 failed, 2 the environment could not be set up.
set -uo pipefail

major=${1:-15}
case "$major" in
    15) suite=bookworm ;;
    17) suite=trixie ;;
    *) echo "usage: $0 [15|17]" >&2; exit 2 ;;
esac

ET_ROOT=$(cd "$(dirname "$0")/.." && pwd)
base=$ET_ROOT/tmp/package
bare=$base/bare-$suite
build=$base/build-$suite
clean=$base/clean-$suite
log=$base/setup-$suite.log

setup_failed() { echo "package $major: environment setup failed: $*" >&2; exit 2; }
say() { printf '\n==> %s\n' "$*"; }

[ "$(id -u)" -eq 0 ] || setup_failed "needs root (debootstrap, chroot, mount)"
mkdir -p "$base"
mirror=$(awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/*.sources 2>/dev/null)
[ -n "$mirror" ] || mirror=$(awk '$1 == "deb" && $0 !~ /security/ { print $2; exit }' /etc/apt/sources.list 2>/dev/null)
[ -n "$mirror" ] || setup_failed "no Debian mirror found in the apt sources"

mounted=()
cleanup() {
    local pid i r
    for r in "$build" "$clean"; do
        for pid in $(ls /proc | grep -E '^[0-9]+$'); do
            [ "$(readlink "/proc/$pid/root" 2>/dev/null)" = "$r" ] && kill -9 "$pid" 2>/dev/null
        done
    done
    for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
        umount "${mounted[$i]}" 2>/dev/null || umount -l "${mounted[$i]}" 2>/dev/null
    done
    mounted=()
}
trap cleanup EXIT INT TERM

enter() { # enter ROOT: mounts /proc and /dev into ROOT
    local r=$1 m
    cp /etc/resolv.conf "$r/etc/resolv.conf" 2>/dev/null
    for m in proc dev dev/pts; do
        if [ "$m" = proc ]; then mount -t proc proc "$r/proc"; else mount --bind "/$m" "$r/$m"; fi ||
            setup_failed "cannot mount /$m in $r"
        mounted+=("$r/$m")
    done
}
in_root() { # in_root ROOT COMMAND...
    local r=$1; shift
    chroot "$r" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
        DEBIAN_FRONTEND=noninteractive "$@"
}

# The bare root: debootstrap's minimal Debian, no service may start in it.
if [ ! -f "$bare/.extension_tokens-bare" ]; then
    say "creating a bare Debian $suite root in $bare (cached)"
    command -v debootstrap >/dev/null ||
        { apt-get install -y -q debootstrap >>"$log" 2>&1 || setup_failed "cannot install debootstrap"; }
    rm -rf "$bare"
    debootstrap --variant=minbase "$suite" "$bare" "$mirror" >"$log" 2>&1 ||
        setup_failed "debootstrap $suite failed (see $log)"
    printf '#!/bin/sh\nexit 101\n' > "$bare/usr/sbin/policy-rc.d"
    chmod +x "$bare/usr/sbin/policy-rc.d"
    touch "$bare/.extension_tokens-bare"
fi

# The build root: the bare one with the package's build dependencies.
build_deps="build-essential debhelper fakeroot binutils postgresql-server-dev-all
postgresql-server-dev-$major libjwt-dev libjansson-dev libssl-dev"
if [ "$(cat "$build/.extension_tokens-build" 2>/dev/null)" != "$build_deps" ]; then
    say "creating the build root $build (cached)"
    rm -rf "$build"
    cp -a "$bare" "$build"
    enter "$build"
    in_root "$build" apt-get -o Acquire::Check-Valid-Until=false update -q >>"$log" 2>&1 ||
        setup_failed "apt-get update in the build root failed (see $log)"
    # shellcheck disable=SC2086
    in_root "$build" apt-get install -y -q --no-install-recommends $build_deps >>"$log" 2>&1 ||
        setup_failed "installing the build dependencies failed (see $log)"
    printf '%s' "$build_deps" > "$build/.extension_tokens-build"
    cleanup
fi

passed=0
failed=0
check() { # check NAME COMMAND...: one test
    if "${@:2}"; then
        echo "ok - $1"; passed=$((passed + 1))
    else
        echo "not ok - $1"; failed=$((failed + 1))
    fi
}
finish() {
    echo "$passed passed, $failed failed"
    [ "$failed" -eq 0 ] && [ "$passed" -gt 0 ] && exit 0
    exit 1
}

# Build: the tree as git sees it, the way apt.postgresql.org builds.
say "building the package for PostgreSQL $major in $build"
enter "$build"
rm -rf "$build/build"
mkdir -p "$build/build/extension_tokens"
(cd "$ET_ROOT" && git ls-files -co --exclude-standard -z | tar --null -T - -cf -) |
    tar -C "$build/build/extension_tokens" -xf - || setup_failed "cannot copy the tree"
in_root "$build" /bin/bash -c "cd /build/extension_tokens &&
    echo $major > debian/pgversions &&
    pg_buildext updatecontrol &&
    dpkg-buildpackage -b -us -uc" >"$base/build-$suite.log" 2>&1
rc=$?
check "dpkg-buildpackage builds the package (log: tmp/package/build-$suite.log)" test "$rc" -eq 0
deb=$(ls "$build/build"/postgresql-"$major"-extension-tokens_*.deb 2>/dev/null | head -n 1)
[ -n "$deb" ] || { tail -n 30 "$base/build-$suite.log"; finish; }
cp "$deb" "$base/"
deb=$base/$(basename "$deb")
echo "built $deb"
cleanup
dpkg-deb -f "$deb" Depends
check "the package depends on libjwt" bash -c "dpkg-deb -f '$deb' Depends | grep -q 'libjwt'"
check "the package depends on jansson" bash -c "dpkg-deb -f '$deb' Depends | grep -q 'libjansson'"
check "the package depends on its PostgreSQL" bash -c "dpkg-deb -f '$deb' Depends | grep -q 'postgresql-$major'"
check "the package holds the library, the control file and every install script" bash -c "
    dpkg-deb -c '$deb' > '$base/contents.txt' &&
    grep -q '/usr/lib/postgresql/$major/lib/extension_tokens.so' '$base/contents.txt' &&
    grep -q '/usr/share/postgresql/$major/extension/extension_tokens.control' '$base/contents.txt' &&
    for f in '$ET_ROOT'/extension_tokens--*.sql; do
        grep -q \"/usr/share/postgresql/$major/extension/\$(basename \$f)\" '$base/contents.txt' || exit 1
    done"

# Install: a clean root, apt resolves everything from the package's Depends.
say "installing the package in a clean Debian $suite root ($clean)"
rm -rf "$clean"
cp -a "$bare" "$clean"
cp "$deb" "$clean/tmp/"
enter "$clean"
in_root "$clean" apt-get -o Acquire::Check-Valid-Until=false update -q >>"$log" 2>&1 ||
    setup_failed "apt-get update in the clean root failed (see $log)"
in_root "$clean" apt-get install -y -q --no-install-recommends \
    "/tmp/$(basename "$deb")" "postgresql-$major-cron" >"$base/install-$suite.log" 2>&1
check "apt installs the package and its dependencies (log: tmp/package/install-$suite.log)" test $? -eq 0
check "the library's every dependency resolves (ldd)" bash -c "
    chroot '$clean' ldd /usr/lib/postgresql/$major/lib/extension_tokens.so | tee '$base/ldd.txt' | grep -q 'libjansson' &&
    ! grep -q 'not found' '$base/ldd.txt'"
check "libjwt's soname that the library loads is installed" bash -c "
    so=\$(strings '$clean/usr/lib/postgresql/$major/lib/extension_tokens.so' | grep -m1 '^libjwt\.so\.[0-9]') &&
    echo \"  dlopen()s \$so\" && chroot '$clean' /sbin/ldconfig -p | grep -q \"\$so\""

# Smoke test against the installed package: a cluster of the package's
# PostgreSQL, as Debian's postgres user.
say "smoke test against the installed package"
secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
in_root "$clean" /bin/bash -c "
    set -e
    mkdir -p /tmp/smoke && chown postgres: /tmp/smoke
    runuser -u postgres -- /usr/lib/postgresql/$major/bin/initdb -D /tmp/smoke/data -A trust -U postgres >/tmp/smoke/initdb.log
    cat >> /tmp/smoke/data/postgresql.conf <<CONF
listen_addresses = ''
unix_socket_directories = '/tmp/smoke'
shared_preload_libraries = 'pg_cron,extension_tokens'
cron.database_name = 'postgres'
cron.use_background_workers = on
max_worker_processes = 16
extension_tokens.jwt_secret = '$secret'
CONF
    runuser -u postgres -- /usr/lib/postgresql/$major/bin/pg_ctl -D /tmp/smoke/data -l /tmp/smoke/server.log -w start >/dev/null" ||
    { cat "$clean/tmp/smoke/server.log" 2>/dev/null; check "the installed PostgreSQL starts with the library preloaded" false; finish; }
check "the installed PostgreSQL starts with the library preloaded" true
sql() { in_root "$clean" runuser -u postgres -- psql -X -q -A -t -v ON_ERROR_STOP=1 -h /tmp/smoke -d postgres -c "$1" 2>&1; }
sql "CREATE EXTENSION pg_cron"
out=$(sql "CREATE EXTENSION extension_tokens" && sql "SELECT extversion FROM pg_extension WHERE extname = 'extension_tokens'")
echo "$out"
check "CREATE EXTENSION installs version 1.2 without a warning" bash -c "[ '$out' = '1.2' ]"
check "pg_cron has the cleanup job" bash -c "[ \"\$(echo \"\$1\")\" = 2 ]" _ \
    "$(sql "SELECT count(*) FROM cron.job WHERE jobname LIKE 'extension_tokens%:postgres'")"
pair=$(sql "SELECT access_token || ' ' || refresh_token FROM extension_token_issue('smoke-user', 'package smoke test')")
access=${pair%% *}
refresh=${pair##* }
check "issue returns a token pair" bash -c "[[ '$access' == *.*.* ]] && [ -n '$refresh' ]"
check "validate accepts the access token" bash -c "[ \"\$1\" = 't|smoke-user' ]" _ \
    "$(sql "SELECT format('%s|%s', valid, user_id) FROM extension_token_validate('$access')")"
pair2=$(sql "SELECT access_token || ' ' || refresh_token FROM extension_token_refresh('$refresh')")
access2=${pair2%% *}
check "refresh exchanges the refresh token for a new pair" bash -c "[[ '$access2' == *.*.* ]] && [ '$access2' != '$access' ]"
check "revoke revokes the session" bash -c "[ \"\$1\" = t ]" _ "$(sql "SELECT extension_token_revoke('$access2')")"
check "validate refuses the revoked token" bash -c "[ \"\$1\" = 'f|revoked' ]" _ \
    "$(sql "SELECT format('%s|%s', valid, error) FROM extension_token_validate('$access2')")"
sql "DROP EXTENSION extension_tokens" >/dev/null
check "DROP EXTENSION leaves no pg_cron job" bash -c "[ \"\$1\" = 0 ]" _ \
    "$(sql "SELECT count(*) FROM cron.job WHERE jobname LIKE 'extension_tokens%'")"
in_root "$clean" runuser -u postgres -- /usr/lib/postgresql/$major/bin/pg_ctl -D /tmp/smoke/data -m fast -w stop >/dev/null
# (A fast shutdown's "terminating background worker" FATALs are no error.)
check "the server log holds no error" bash -c "! grep -E 'ERROR|FATAL|PANIC' '$clean/tmp/smoke/server.log' |
    grep -v 'due to administrator command'"
finish
