#!/usr/bin/env bash
# test/compat.sh MAJOR: the whole test suite against PostgreSQL MAJOR (17 or 18)
# from Debian's own packages, in a Debian root made by debootstrap (trixie for
# 17, sid for 18) and cached under tmp/compat/.  The tree is copied in afresh
# each time and test/run-all.sh runs there with PG_MAJOR=MAJOR.
#
# COMPAT_COMMAND='...' runs that shell command in the copied tree instead of
# test/run-all.sh (e.g. COMPAT_COMMAND='make -s installcheck' for a quick
# look; PG_MAJOR is set).
#
# Exit status: 0 suite passed, 1 suite failed, 2 the environment could not be
# set up (no root, no mirror, packages unavailable).  Needs root.
set -uo pipefail

major=${1:-}
case "$major" in
    17) suite=trixie ;;
    18) suite=sid ;;
    15) suite=bookworm ;;
    *) echo "usage: $0 15|17|18" >&2; exit 2 ;;
esac

ET_ROOT=$(cd "$(dirname "$0")/.." && pwd)
base=$ET_ROOT/tmp/compat
root=$base/root$major
log=$base/setup$major.log

setup_failed() { echo "compat $major: environment setup failed: $*" >&2; exit 2; }

[ "$(id -u)" -eq 0 ] || setup_failed "needs root (debootstrap, chroot, mount)"
mkdir -p "$base"

# The Debian mirror this machine's apt already uses.
mirror=$(awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/*.sources 2>/dev/null)
[ -n "$mirror" ] || mirror=$(awk '$1 == "deb" && $0 !~ /security/ { print $2; exit }' /etc/apt/sources.list 2>/dev/null)
[ -n "$mirror" ] || setup_failed "no Debian mirror found in the apt sources"

mounted=()
cleanup() {
    local pid i
    # Anything still running inside the root (a server a failed run left).
    for pid in $(ls /proc | grep -E '^[0-9]+$'); do
        [ "$(readlink "/proc/$pid/root" 2>/dev/null)" = "$root" ] && kill -9 "$pid" 2>/dev/null
    done
    for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
        umount "${mounted[$i]}" 2>/dev/null || umount -l "${mounted[$i]}" 2>/dev/null
    done
    mounted=()
}
trap cleanup EXIT INT TERM

mount_into_root() {
    mount "$@" || return 1
    mounted+=("${!#}")
}

in_root() {
    chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
        DEBIAN_FRONTEND=noninteractive "$@"
}

if [ ! -f "$root/.extension_tokens-ready" ]; then
    echo "compat $major: creating a Debian $suite root in $root (cached for later runs)"
    command -v debootstrap >/dev/null ||
        { apt-get install -y -q debootstrap >>"$log" 2>&1 || setup_failed "cannot install debootstrap"; }
    rm -rf "$root"
    debootstrap --variant=minbase "$suite" "$root" "$mirror" >"$log" 2>&1 ||
        setup_failed "debootstrap $suite failed (see $log)"
    # No service may start inside the root.
    printf '#!/bin/sh\nexit 101\n' > "$root/usr/sbin/policy-rc.d"
    chmod +x "$root/usr/sbin/policy-rc.d"
fi

cp /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null
# The certificate authorities this machine trusts (a proxy in front of the
# npm registry may present its own), for npm and node inside the root.
host_ca=/etc/ssl/certs/ca-certificates.crt
if [ -f "$host_ca" ]; then
    mkdir -p "$root/etc/ssl/certs"
    cp "$host_ca" "$root/etc/ssl/certs/host-ca-certificates.crt"
fi
mount_into_root -t proc proc "$root/proc" || setup_failed "cannot mount /proc"
mount_into_root --bind /dev "$root/dev" || setup_failed "cannot bind /dev"
mount_into_root --bind /dev/pts "$root/dev/pts" || setup_failed "cannot bind /dev/pts"

# What test/lib.sh and test/postgrest.sh would install, so that a missing
# package is a setup failure here rather than a test failure later.  The
# list is kept in the stamp: a root made for an older list is completed.
packages="build-essential postgresql-$major postgresql-server-dev-$major postgresql-$major-cron
libjwt-dev libjansson-dev libssl-dev openssl libipc-run-perl python3 python3-jwt python3-cryptography python3-psycopg2 npm
prometheus-postgres-exporter prometheus pgbouncer postgresql-$major-plproxy"
# A mirror's suite (sid above all) may carry a Release file older than its
# Valid-Until: every apt-get of the root, the tests' own included, takes it.
printf 'Acquire::Check-Valid-Until "false";\n' > "$root/etc/apt/apt.conf.d/99extension-tokens"
if [ "$(cat "$root/.extension_tokens-ready" 2>/dev/null)" != "$packages" ]; then
    in_root apt-get -o Acquire::Check-Valid-Until=false update -q >>"$log" 2>&1 ||
        setup_failed "apt-get update in the $suite root failed (see $log)"
    # shellcheck disable=SC2086
    in_root apt-get install -y -q --no-install-recommends $packages >>"$log" 2>&1 ||
        setup_failed "installing PostgreSQL $major in the $suite root failed (see $log)"
    printf '%s' "$packages" > "$root/.extension_tokens-ready"
fi

# The tree as git sees it (tracked and untracked-but-not-ignored files).
rm -rf "$root/src/extension_tokens"
mkdir -p "$root/src/extension_tokens"
(cd "$ET_ROOT" && git ls-files -co --exclude-standard -z | tar --null -T - -cf -) |
    tar -C "$root/src/extension_tokens" -xf - || setup_failed "cannot copy the tree"

echo "compat $major: $(in_root /usr/lib/postgresql/$major/bin/postgres --version)," \
     "libjwt $(in_root dpkg-query -W -f='${Version}' libjwt-dev)"
ca_env=()
[ -f "$root/etc/ssl/certs/host-ca-certificates.crt" ] &&
    ca_env=(NODE_EXTRA_CA_CERTS=/etc/ssl/certs/host-ca-certificates.crt
            npm_config_cafile=/etc/ssl/certs/host-ca-certificates.crt)
command=${COMPAT_COMMAND:-./test/run-all.sh}
in_root "${ca_env[@]}" /bin/bash -c "cd /src/extension_tokens && export PG_MAJOR=$major && $command"
status=$?
[ $status -eq 0 ] || exit 1
exit 0
