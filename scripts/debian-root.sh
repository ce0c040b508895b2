#!/usr/bin/env bash
# Builds (once) the minimal Debian root file system the systemd boot test
# runs in, and prints its path. The root is cached outside the source tree,
# keyed by the stamp below: change the stamp to rebuild it.
#
#   WATCHFOLDER_CACHE  cache directory (default $XDG_CACHE_HOME/watchfolder,
#                      then $HOME/.cache/watchfolder)
#   DEBIAN_MIRROR      Debian mirror (default http://deb.debian.org/debian)
set -euo pipefail
SUITE=bookworm
PACKAGES=systemd,dbus,procps
STAMP="$SUITE-minbase-${PACKAGES//,/-}-v2"
CACHE="${WATCHFOLDER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/watchfolder}"
ROOT="$CACHE/debian-root-$STAMP"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

if [ -e "$ROOT/.complete" ]; then
	echo "$ROOT"
	exit 0
fi
mkdir -p "$CACHE"
# One build at a time: a second caller waits and then finds the root built.
exec 9>"$CACHE/debian-root.lock"
flock 9
if [ -e "$ROOT/.complete" ]; then
	echo "$ROOT"
	exit 0
fi
command -v debootstrap >/dev/null || { echo "debootstrap is missing (make test-deps installs it)" >&2; exit 1; }
TMP="$ROOT.tmp.$$"
rm -rf "$ROOT" "$CACHE"/debian-root-"$STAMP".tmp.*
echo "building the Debian $SUITE root for the systemd test in $ROOT (first time takes a few minutes)" >&2
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$TMP" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 || {
	echo "debootstrap failed; log: $CACHE/debootstrap.log" >&2
	tail -20 "$CACHE/debootstrap.log" >&2
	exit 1
}
# Keep the cache small: package archives and lists are not needed to boot.
rm -rf "$TMP"/var/cache/apt/archives/*.deb "$TMP"/var/lib/apt/lists/*_Packages
# No console getty, no units that wait for hardware the namespace lacks.
for unit in getty.target getty@tty1.service serial-getty@ttyS0.service console-getty.service; do
	ln -sf /dev/null "$TMP/etc/systemd/system/$unit"
done
ln -sf /lib/systemd/system/multi-user.target "$TMP/etc/systemd/system/default.target"
ln -sf /dev/null "$TMP/etc/systemd/system/systemd-networkd-wait-online.service"
echo watchfolder-test >"$TMP/etc/hostname"
touch "$TMP/.complete"
mv "$TMP" "$ROOT"
echo "$ROOT"
