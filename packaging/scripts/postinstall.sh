#!/bin/sh
# Apply sysusers and tmpfiles, make systemd see the new unit, and restart
# the service on upgrade only when the admin enabled it and it is running.
# A fresh install never starts it: it needs a config and folders first.
set -e
# deb: configure [OLD-VERSION]; rpm: 1 (install) or 2 (upgrade).
upgrade=no
case "$1" in
configure) [ -n "$2" ] && upgrade=yes ;;
[2-9]*) upgrade=yes ;;
esac
if command -v systemd-sysusers >/dev/null 2>&1; then
	systemd-sysusers /usr/lib/sysusers.d/watchfolder.conf || true
fi
if command -v systemd-tmpfiles >/dev/null 2>&1; then
	systemd-tmpfiles --create /usr/lib/tmpfiles.d/watchfolder.conf || true
fi
# Ownership by name resolves only once the group exists.
chgrp watchfolder /etc/watchfolder /etc/watchfolder/config.toml 2>/dev/null || true
chmod 0750 /etc/watchfolder
chmod 0640 /etc/watchfolder/config.toml 2>/dev/null || true
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload || true
	if [ "$upgrade" = yes ] && systemctl -q is-enabled watchfolder.service 2>/dev/null; then
		systemctl try-restart watchfolder.service || true
	fi
fi
exit 0
