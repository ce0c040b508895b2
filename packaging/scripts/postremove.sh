#!/bin/sh
# Forget the removed unit. The state in /var/lib/watchfolder stays (it
# holds the delivery history); deb purge removes /etc/watchfolder too.
set -e
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
fi
if [ "$1" = purge ]; then
	rm -rf /etc/watchfolder
fi
exit 0
