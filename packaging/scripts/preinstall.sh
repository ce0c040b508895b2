#!/bin/sh
# Create the service user and group before the files are unpacked, so
# /etc/watchfolder and its config get the watchfolder group by name.
set -e
if command -v systemd-sysusers >/dev/null 2>&1; then
	systemd-sysusers --replace=/usr/lib/sysusers.d/watchfolder.conf - <<'SYSUSERS'
u watchfolder - "watchfolder media ingest daemon" /var/lib/watchfolder
SYSUSERS
elif ! getent passwd watchfolder >/dev/null; then
	groupadd --system watchfolder 2>/dev/null || true
	useradd --system --gid watchfolder --home-dir /var/lib/watchfolder --no-create-home \
		--shell /usr/sbin/nologin --comment "watchfolder media ingest daemon" watchfolder
fi
exit 0
