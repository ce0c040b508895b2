#!/usr/bin/env bash
# make demo: a local MinIO on loopback, a demo folder, and watchfolder
# delivering whatever lands in it. Ctrl-C, closing the terminal (HUP) or
# TERM stop both; nothing is left running.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DEMO="${DEMO_DIR:-$ROOT/.demo}"
WATCHFOLDER="${WATCHFOLDER_BIN:-$ROOT/watchfolder}"
PORT="${DEMO_MINIO_PORT:-9900}"
BUCKET=demo
export AWS_ACCESS_KEY_ID=watchfolder-demo
export AWS_SECRET_ACCESS_KEY=watchfolder-demo-secret
mkdir -p "$DEMO/inbox" "$DEMO/state" "$DEMO/minio"

if curl -fsS "http://127.0.0.1:$PORT/minio/health/live" >/dev/null 2>&1 || (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
  echo "port $PORT is already in use: set DEMO_MINIO_PORT to a free port" >&2
  exit 1
fi
MINIO_ROOT_USER=$AWS_ACCESS_KEY_ID MINIO_ROOT_PASSWORD=$AWS_SECRET_ACCESS_KEY MINIO_BROWSER=off MINIO_UPDATE=off \
  "${WATCHFOLDER_BIN_DIR:-$ROOT/.bin}/minio" server "$DEMO/minio" --address "127.0.0.1:$PORT" --quiet >"$DEMO/minio.log" 2>&1 &
MINIO_PID=$!
DAEMON_PID=
cleanup() {
  trap - EXIT HUP INT TERM
  # TERM, not HUP: the daemon takes HUP as "reload".
  [ -n "$DAEMON_PID" ] && kill -TERM "$DAEMON_PID" 2>/dev/null && wait "$DAEMON_PID" 2>/dev/null
  kill -TERM "$MINIO_PID" 2>/dev/null
  wait "$MINIO_PID" 2>/dev/null || true
}
trap cleanup EXIT
trap 'cleanup; exit 129' HUP
trap 'cleanup; exit 130' INT
trap 'cleanup; exit 143' TERM
for _ in $(seq 1 100); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then break; fi
  sleep 0.1
done
(cd "$ROOT" && go build -o "$DEMO/s3tool" ./internal/demo/s3tool)
for _ in $(seq 1 50); do
  "$DEMO/s3tool" -endpoint "http://127.0.0.1:$PORT" -bucket "$BUCKET" mb 2>/dev/null && break
  sleep 0.2
done

# The CLI reads this config too: keep the secret in a private file rather
# than an environment variable only this shell has.
(umask 077 && printf '%s\n' "$AWS_SECRET_ACCESS_KEY" >"$DEMO/minio.secret")
cat >"$DEMO/config.toml" <<TOML
# Written by make demo. See config.example.toml for every key.
state_dir = "$DEMO/state"
control_socket = "$DEMO/control.sock"

[[folder]]
name = "demo"
path = "$DEMO/inbox"
destinations = ["minio"]
stable_after = "2s"
rescan_interval = "30s"

[destination.minio]
type = "s3"
bucket = "$BUCKET"
key = "{folder}/{yyyy}/{mm}/{dd}/{relpath}"
endpoint = "http://127.0.0.1:$PORT"
path_style = true
access_key_id = "$AWS_ACCESS_KEY_ID"
secret_access_key = "file:$DEMO/minio.secret"
TOML

cat <<MSG

==============================================================================
 watchfolder demo
   MinIO (S3):   http://127.0.0.1:$PORT  bucket "$BUCKET"  (logs: .demo/minio.log)
   Drop a file:  cp some-video.mp4 $DEMO/inbox/
   Job status:   ./watchfolder list --config $DEMO/config.toml --json
                 ./watchfolder status --config $DEMO/config.toml
   In the bucket: .demo/s3tool -endpoint http://127.0.0.1:$PORT -bucket $BUCKET ls
                 (with AWS_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY)
   Delivered files move to $DEMO/inbox/processed/
 Ctrl-C (or closing this terminal) stops the daemon and MinIO.
==============================================================================

MSG
# In the background so this shell's traps run when a signal arrives (bash
# defers traps while a foreground child runs); the daemon ignores the
# terminal's signals and is stopped by cleanup.
"$WATCHFOLDER" run --config "$DEMO/config.toml" </dev/null &
DAEMON_PID=$!
wait "$DAEMON_PID" || true
