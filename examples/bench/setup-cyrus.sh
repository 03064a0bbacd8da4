#!/usr/bin/env bash
# examples/bench/setup-cyrus.sh — puts a Cyrus IMAP 3.6 where the benchmark
# (examples/bench) can run it, without installing Debian's cyrus-imapd.
#
# Why it exists: Debian's cyrus-imapd/cyrus-common packages conflict with
# dovecot-core (both provide the IMAP server role), and emap's tests need
# Dovecot installed. So Cyrus is only *unpacked* (`dpkg-deb -x`) into a
# directory, and the benchmark runs its `master` from there with its own
# config. The plain libraries it links against (libical, libpcre3, xapian,
# the SASL modules) do not conflict and are installed with apt-get.
#
# Usage (as root): examples/bench/setup-cyrus.sh [DIR]
# DIR defaults to $EMAP_BENCH_CYRUS_ROOT or /var/cache/emap-bench/cyrus;
# the benchmark looks in the same places.
set -euo pipefail

dir="${1:-${EMAP_BENCH_CYRUS_ROOT:-/var/cache/emap-bench/cyrus}}"
if [ -x "$dir/usr/lib/cyrus/bin/master" ] && [ -x "$dir/usr/sbin/saslpasswd2" ]; then
    echo "Cyrus already unpacked in $dir"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "error: run as root (apt-get install of Cyrus' libraries)" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq libical3 libpcre3 libxapian30 libsasl2-modules libsasl2-modules-db >/dev/null
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
chmod 755 "$work"
(cd "$work" && apt-get download -qq cyrus-imapd cyrus-common sasl2-bin)
mkdir -p "$dir"
for deb in "$work"/*.deb; do
    dpkg-deb -x "$deb" "$dir"
done
missing="$(LD_LIBRARY_PATH="$dir/usr/lib/x86_64-linux-gnu" ldd "$dir/usr/lib/cyrus/bin/imapd" \
    "$dir/usr/lib/cyrus/bin/lmtpd" "$dir/usr/lib/cyrus/bin/master" | grep 'not found' || true)"
if [ -n "$missing" ]; then
    echo "error: Cyrus still misses libraries:" >&2
    echo "$missing" >&2
    exit 1
fi
echo "Cyrus unpacked in $dir"
