#!/bin/sh
# On removal (not upgrade) stop and disable the service: its binary is
# about to go. deb: remove|upgrade|...; rpm: 0 (erase) or 1 (upgrade).
set -e
case "$1" in
remove|0)
	if [ -d /run/systemd/system ]; then
		systemctl --no-reload disable --now watchfolder.service >/dev/null 2>&1 || true
	fi
	;;
esac
exit 0
