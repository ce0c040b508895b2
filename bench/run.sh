#!/usr/bin/env bash
# make bench: watchfolder vs mc vs rclone, side by side, against one local
# MinIO on a free loopback port. Writes docs/benchmarks.md and
# docs/benchmarks.svg; raw results and logs go to bench/results/<time>/.
#
# Scenarios (each run BENCH_RUNS times, tools interleaved, medians reported):
#   1gib    one 1 GiB file: watchfolder (rename into the watched folder until
#           done) vs `mc cp` vs `rclone copyto`
#   burst   2,000 files of 256 KiB at once: watchfolder (rename the directory
#           in until all are done and in processed/) vs `mc mirror` vs
#           `rclone copy --transfers 8`
#   resume  SIGKILL watchfolder at ~50 % of a 1 GiB upload, restart, count
#           the bytes that crossed a proxy in front of MinIO
#   wan1gib one 1 GiB file through a simulated WAN (toxiproxy, in-process in
#           bench/cmd/wan: BENCH_WAN_ONE_WAY each way, BENCH_WAN_RATE per
#           connection upstream) in front of the same MinIO: watchfolder vs
#           `mc cp` and `rclone copyto` with their defaults, and with their
#           documented parallelism settings (`mc put --parallel 16`,
#           `rclone copyto --s3-upload-concurrency 16`)
#   wanfar  one 1 GiB file through a farther, thinner link (a second proxy:
#           BENCH_WANFAR_ONE_WAY each way, BENCH_WANFAR_RATE per connection):
#           watchfolder vs the peers with their parallelism settings only (with
#           their defaults, 4 streams of 5 MiB/s, each run would take a minute)
#   wan500  500 files of 2 MiB at once through the same WAN: watchfolder vs
#           `mc mirror` vs `rclone copy --transfers 8`
#
# Environment knobs (defaults in brackets):
#   BENCH_RUNS [3]  BENCH_SCENARIOS ["1gib burst resume wan1gib wanfar wan500"]
#   BENCH_WAN_ONE_WAY [20ms]  BENCH_WAN_RATE [20MiB]  (per connection, upstream)
#   BENCH_WANFAR_ONE_WAY [50ms]  BENCH_WANFAR_RATE [5MiB]  BENCH_WANFAR_SIZE [$BENCH_BIG_SIZE]
#   BENCH_WAN_FILES [500]  BENCH_WAN_SIZE [2097152]  BENCH_WAN_BIG_SIZE [$BENCH_BIG_SIZE]
#   BENCH_BIG_SIZE [1073741824]  BENCH_BURST_FILES [2000]  BENCH_BURST_SIZE [262144]
#   BENCH_WAIT_LOAD [900]  seconds to wait for the 1-min load average < 1.0 (0: don't)
#   BENCH_TOOLS ["watchfolder mc rclone"]  a subset, for quick runs; a peer
#                   setting alone by its id (e.g. "watchfolder mc-p16")
#   BENCH_VARIANTS [1]  also run watchfolder with receipts=true and max_files=4
#                       (burst) and concurrency=2 (resume), for comparison; 0: don't
#   BENCH_DIR  scratch directory (test files + MinIO data, same disk) [mktemp under /var/tmp]
#   BENCH_KEEP=1  keep the scratch directory
#   BENCH_BASELINE  another watchfolder binary (e.g. the last release's), measured
#                   beside this tree's as "watchfolder baseline" in every scenario
#                   but resume
#   BENCH_DOC [docs/benchmarks.md]  where the report goes
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN="${WATCHFOLDER_BIN_DIR:-$ROOT/.bin}" # as internal/testenv: where the pinned tools are
GO=${GO:-go}

# Peers, pinned (rebuilt only when the version changes: see the stamp files).
MC_MODULE=github.com/minio/mc
MC_VERSION=v0.0.0-20250313080218-cf909e1063a9
RCLONE_MODULE=github.com/rclone/rclone
RCLONE_VERSION=v1.75.1
MINIO_VERSION=$(sed -n 's/^MINIO_VERSION *:= *//p' "$ROOT/Makefile")

RUNS=${BENCH_RUNS:-3}
SCENARIOS=${BENCH_SCENARIOS:-"1gib burst resume wan1gib wanfar wan500"}
WAN_ONE_WAY=${BENCH_WAN_ONE_WAY:-20ms}
WAN_RATE=${BENCH_WAN_RATE:-20MiB}
WANFAR_ONE_WAY=${BENCH_WANFAR_ONE_WAY:-50ms}
WANFAR_RATE=${BENCH_WANFAR_RATE:-5MiB}
WAN_FILES=${BENCH_WAN_FILES:-500}
WAN_SIZE=${BENCH_WAN_SIZE:-2097152}
BIG_SIZE=${BENCH_BIG_SIZE:-1073741824}
WAN_BIG_SIZE=${BENCH_WAN_BIG_SIZE:-$BIG_SIZE}
WANFAR_SIZE=${BENCH_WANFAR_SIZE:-$BIG_SIZE}
BURST_FILES=${BENCH_BURST_FILES:-2000}
BURST_SIZE=${BENCH_BURST_SIZE:-262144}
WAIT_LOAD=${BENCH_WAIT_LOAD:-900}
DOC=${BENCH_DOC:-$ROOT/docs/benchmarks.md}
SVG=${DOC%.md}.svg
PART_SIZE=$((16 << 20)) # watchfolder's default, used by the configs wfrun writes

log() { printf '\n== %s\n' "$*"; }
die() { printf 'bench: %s\n' "$*" >&2; exit 1; }

[[ -x "$ROOT/watchfolder" ]] || die "no ./watchfolder: run 'make build' (make bench does)"
[[ -x "$BIN/minio" ]] || die "no .bin/minio: run 'make test-deps' (make bench does)"

install_tool() { # name module version
  local name=$1 module=$2 version=$3
  if [[ -x "$BIN/$name" && -e "$BIN/$name.$version" ]]; then return; fi
  echo "installing $name $version into .bin/ (first time takes a few minutes)"
  mkdir -p "$BIN"
  GOBIN="$BIN" GOFLAGS=-buildvcs=false "$GO" install "$module@$version"
  rm -f "$BIN/$name".v* && touch "$BIN/$name.$version"
}
TOOLS=${BENCH_TOOLS:-"watchfolder mc rclone"}
VARIANTS=${BENCH_VARIANTS:-1}
wants() {
  case $1 in
    wf-base) [[ " $TOOLS " == *" watchfolder "* ]] ;;
    wf-*) [[ $VARIANTS == 1 && " $TOOLS " == *" watchfolder "* ]] ;;
    mc-*|rclone-*) [[ " $TOOLS " == *" ${1%%-*} "* || " $TOOLS " == *" $1 "* ]] ;;
    *) [[ " $TOOLS " == *" $1 "* ]] ;;
  esac
}
install_tool mc "$MC_MODULE" "$MC_VERSION" # also creates the buckets
if wants rclone; then install_tool rclone "$RCLONE_MODULE" "$RCLONE_VERSION"; fi

STAMP=$(date -u +%Y%m%d-%H%M%S)
RESULTS_DIR="$ROOT/bench/results/$STAMP"
RES="$RESULTS_DIR/results.jsonl"
mkdir -p "$RESULTS_DIR/logs"
WORK=${BENCH_DIR:-$(mktemp -d /var/tmp/wfbench.XXXXXX)}
mkdir -p "$WORK"
MINIO_PID=
PROXY_PIDS=()
cleanup() {
  for pid in "${PROXY_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  if [[ -n "$MINIO_PID" ]]; then kill "$MINIO_PID" 2>/dev/null || true; wait "$MINIO_PID" 2>/dev/null || true; fi
  if [[ "${BENCH_KEEP:-0}" != 1 ]]; then rm -rf "$WORK"; else echo "scratch kept in $WORK"; fi
}
trap cleanup EXIT

log "building the benchmark helpers"
(cd "$ROOT" && for t in measure wfrun report wan; do "$GO" build -o "$WORK/tools/$t" "./bench/cmd/$t"; done)
# A private copy: other work may rebuild ./watchfolder while this runs.
cp "$ROOT/watchfolder" "$WORK/tools/watchfolder"
if [[ -n "${BENCH_BASELINE:-}" ]]; then cp "$BENCH_BASELINE" "$WORK/tools/watchfolder-base"; fi
MEASURE="$WORK/tools/measure" WFRUN="$WORK/tools/wfrun" REPORT="$WORK/tools/report"

log "starting MinIO $MINIO_VERSION (data in $WORK/minio)"
export MINIO_ROOT_USER=wfbenchaccess MINIO_ROOT_PASSWORD=wfbenchsecret-0123456789
export MINIO_BROWSER=off MINIO_UPDATE=off
for attempt in 1 2 3; do
  PORT=$("$WFRUN" freeport)
  mkdir -p "$WORK/minio"
  "$BIN/minio" server "$WORK/minio" --address "127.0.0.1:$PORT" --quiet >"$RESULTS_DIR/logs/minio.log" 2>&1 &
  MINIO_PID=$!
  ENDPOINT="http://127.0.0.1:$PORT"
  if "$WFRUN" waitlive -endpoint "$ENDPOINT" -timeout 30s; then break; fi
  kill "$MINIO_PID" 2>/dev/null || true; wait "$MINIO_PID" 2>/dev/null || true; MINIO_PID=
  [[ $attempt == 3 ]] && die "MinIO did not start (see $RESULTS_DIR/logs/minio.log)"
done
echo "MinIO at $ENDPOINT (pid $MINIO_PID)"

# Peers configured from the environment only.
export MC_HOST_bench="http://$MINIO_ROOT_USER:$MINIO_ROOT_PASSWORD@127.0.0.1:$PORT"
MC=("$BIN/mc" --config-dir "$WORK/mc" --quiet --no-color)
export RCLONE_CONFIG="$WORK/rclone.conf" # absent: remotes come from the environment
export RCLONE_CONFIG_BENCH_TYPE=s3 RCLONE_CONFIG_BENCH_PROVIDER=Minio
export RCLONE_CONFIG_BENCH_ENDPOINT="$ENDPOINT" RCLONE_CONFIG_BENCH_REGION=us-east-1
export RCLONE_CONFIG_BENCH_ACCESS_KEY_ID=$MINIO_ROOT_USER RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY=$MINIO_ROOT_PASSWORD
RCLONE=("$BIN/rclone")
# wfat ENDPOINT MODE FLAGS...: one watchfolder run against ENDPOINT. WF_BIN
# and WF_TOOL pick another binary and its label (the baseline).
wfat() {
  "$WFRUN" "$2" -bin "${WF_BIN:-$WORK/tools/watchfolder}" -endpoint "$1" -access-key "$MINIO_ROOT_USER" \
    -secret-key "$MINIO_ROOT_PASSWORD" -out "$RES" -tool "${WF_TOOL:-watchfolder}" "${@:3}"
}
wf() { wfat "$ENDPOINT" "$@"; }
wfwan() { wfat "$WAN_ENDPOINT" "$@"; }
wffar() { wfat "$FAR_ENDPOINT" "$@"; }

# start_proxy NAME ONE_WAY RATE: a simulated WAN link in front of MinIO, one
# proxy for every tool (each connection gets its own cap, as on a real uplink
# shaped per stream). Sets PROXY_ENDPOINT and exports the remote NAME for mc
# (MC_HOST_NAME) and rclone (RCLONE_CONFIG_NAME_*).
start_proxy() {
  local name=$1 addr_file="$WORK/proxy-$1.addr" addr= up
  log "starting the $name WAN proxy ($2 each way, $3 per connection upstream)"
  "$WORK/tools/wan" -upstream "127.0.0.1:$PORT" -one-way "$2" -rate "$3" >"$addr_file" &
  PROXY_PIDS+=($!)
  for _ in $(seq 100); do
    read -r addr <"$addr_file" || true
    [[ -n $addr ]] && break
    sleep 0.1
  done
  [[ -n $addr ]] || die "the $name WAN proxy did not start"
  PROXY_ENDPOINT="http://$addr"
  up=${name^^}
  export "MC_HOST_$name=http://$MINIO_ROOT_USER:$MINIO_ROOT_PASSWORD@$addr"
  export "RCLONE_CONFIG_${up}_TYPE=s3" "RCLONE_CONFIG_${up}_PROVIDER=Minio" \
    "RCLONE_CONFIG_${up}_ENDPOINT=$PROXY_ENDPOINT" "RCLONE_CONFIG_${up}_REGION=us-east-1" \
    "RCLONE_CONFIG_${up}_ACCESS_KEY_ID=$MINIO_ROOT_USER" "RCLONE_CONFIG_${up}_SECRET_ACCESS_KEY=$MINIO_ROOT_PASSWORD"
  echo "$name WAN proxy at $PROXY_ENDPOINT"
}
WAN_ENDPOINT=
if [[ " $SCENARIOS " == *" wan1gib "* || " $SCENARIOS " == *" wan500 "* ]]; then
  start_proxy wan "$WAN_ONE_WAY" "$WAN_RATE"
  WAN_ENDPOINT=$PROXY_ENDPOINT
fi
FAR_ENDPOINT=
if [[ " $SCENARIOS " == *" wanfar "* ]]; then
  start_proxy far "$WANFAR_ONE_WAY" "$WANFAR_RATE"
  FAR_ENDPOINT=$PROXY_ENDPOINT
fi

STAGE="$WORK/stage"
mkdir -p "$STAGE" "$WORK/runs"
log "generating test files in $STAGE"
has() { [[ " $SCENARIOS " == *" $1 "* ]]; }
if has 1gib || has resume; then "$WFRUN" gen -path "$STAGE/big.mp4" -size "$BIG_SIZE"; fi
if has burst; then "$WFRUN" gen -path "$STAGE/burst" -files "$BURST_FILES" -size "$BURST_SIZE"; fi
if has wan1gib; then
  if [[ $WAN_BIG_SIZE == "$BIG_SIZE" ]] && has 1gib; then ln "$STAGE/big.mp4" "$STAGE/wanbig.mp4"
  else "$WFRUN" gen -path "$STAGE/wanbig.mp4" -size "$WAN_BIG_SIZE"; fi
fi
if has wanfar; then
  if [[ $WANFAR_SIZE == "$BIG_SIZE" ]] && { has 1gib || has resume; }; then ln "$STAGE/big.mp4" "$STAGE/wanfar.mp4"
  else "$WFRUN" gen -path "$STAGE/wanfar.mp4" -size "$WANFAR_SIZE"; fi
fi
if has wan500; then "$WFRUN" gen -path "$STAGE/wan500" -files "$WAN_FILES" -size "$WAN_SIZE"; fi
# Warm the page cache for everyone: the same inodes are used by every tool
# (watchfolder's runs move them back to the stage afterwards).
find "$STAGE" -type f -exec cat {} + >/dev/null

wait_quiet() {
  (( WAIT_LOAD > 0 )) || { echo "load $(cut -d' ' -f1 /proc/loadavg) (not waited for)"; return 0; }
  local waited=0 load
  while :; do
    load=$(cut -d' ' -f1 /proc/loadavg)
    if awk -v l="$load" 'BEGIN{exit !(l < 1.0)}'; then echo "load $load"; return; fi
    if (( waited >= WAIT_LOAD )); then echo "load still $load after ${waited}s: measuring anyway"; return; fi
    echo "load $load >= 1.0, waiting (${waited}s of ${WAIT_LOAD}s)" >&2
    sleep 30; waited=$((waited + 30))
  done
}

# settle flushes dirty pages (MinIO's writes of the previous run) so one
# tool's write-back does not land in the next tool's measurement.
settle() { sync; sleep 2; }

# kill_at RUN: where the resume scenario kills, as a fraction of the file:
# 50 %, then 50 % plus 1/3 and 2/3 of a part, in turn. Exactly 50 % of a
# 1 GiB file is a part boundary (32 x 16 MiB), so every kill there would
# land as the parts in flight finish their bodies and wait for the store's
# answer, the worst moment; a kill in real life comes at any point of a part.
kill_at() {
  awk -v r="$1" -v p="$PART_SIZE" -v s="$BIG_SIZE" 'BEGIN { printf "%.6f", 0.5 + ((r - 1) % 3) / 3 * p / s }'
}

bucket_for() { # scenario tool run -> a fresh bucket
  local b="b-$1-$2-$3-$RANDOM"
  "${MC[@]}" mb "bench/$b" >/dev/null
  echo "$b"
}
drop_bucket() { "${MC[@]}" rb --force "bench/$1" >/dev/null; }

run_tool() { # scenario tool run
  local sc=$1 tool=$2 run=$3 b
  b=$(bucket_for "$sc" "$tool" "$run")
  settle
  if [[ $tool == wf-base ]]; then
    # The baseline binary, measured exactly like watchfolder.
    WF_BIN="$WORK/tools/watchfolder-base" WF_TOOL="watchfolder baseline" run_tool_as "$sc" watchfolder "$run" "$b"
    return
  fi
  run_tool_as "$sc" "$tool" "$run" "$b"
}
# side_ticks: CPU ticks (user+sys) so far of the store (MinIO) and of the
# WAN proxies together, "STORE LINK". Every tool shares the machine with
# them: what they spend is what the machine has left for the tool.
CLK_TCK=$(getconf CLK_TCK)
proc_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
side_ticks() {
  local p link=0
  for p in "${PROXY_PIDS[@]}"; do link=$((link + $(proc_ticks "$p"))); done
  echo "$(proc_ticks "$MINIO_PID") $link"
}
run_tool_as() { # scenario tool run bucket
  local sc=$1 tool=$2 run=$3 b=$4 label=$2 side0 side1
  side0=($(side_ticks))
  case $tool in
    mc-p16) label="mc put --parallel 16" ;;
    rclone-c16) label="rclone --s3-upload-concurrency 16" ;;
  esac
  local m=("$MEASURE" -scenario "$sc" -tool "$label" -run "$run" -out "$RES" -log "$RESULTS_DIR/logs/$sc-$tool-$run.log" --)
  case "$sc/$tool" in
    1gib/watchfolder) wf file -bucket "$b" -run "$run" -work "$WORK/runs/$sc-$run" -stage "$STAGE/big.mp4" ;;
    1gib/mc) "${m[@]}" "${MC[@]}" cp "$STAGE/big.mp4" "bench/$b/big.mp4" ;;
    1gib/rclone) "${m[@]}" "${RCLONE[@]}" copyto "$STAGE/big.mp4" "bench:$b/big.mp4" ;;
    burst/watchfolder) wf burst -bucket "$b" -run "$run" -work "$WORK/runs/$sc-$run" -stage "$STAGE/burst" ;;
    burst/mc) "${m[@]}" "${MC[@]}" mirror "$STAGE/burst" "bench/$b/burst" ;;
    burst/rclone) "${m[@]}" "${RCLONE[@]}" copy --transfers 8 "$STAGE/burst" "bench:$b/burst" ;;
    wan1gib/watchfolder) wfwan file -scenario wan1gib -bucket "$b" -run "$run" -work "$WORK/runs/$sc-$run" -stage "$STAGE/wanbig.mp4" ;;
    wan1gib/mc) "${m[@]}" "${MC[@]}" cp "$STAGE/wanbig.mp4" "wan/$b/big.mp4" ;;
    wan1gib/mc-p16) "${m[@]}" "${MC[@]}" put --parallel 16 "$STAGE/wanbig.mp4" "wan/$b/big.mp4" ;;
    wan1gib/rclone) "${m[@]}" "${RCLONE[@]}" copyto "$STAGE/wanbig.mp4" "wan:$b/big.mp4" ;;
    wan1gib/rclone-c16) "${m[@]}" "${RCLONE[@]}" copyto --s3-upload-concurrency 16 "$STAGE/wanbig.mp4" "wan:$b/big.mp4" ;;
    wanfar/watchfolder) wffar file -scenario wanfar -bucket "$b" -run "$run" -work "$WORK/runs/$sc-$run" -stage "$STAGE/wanfar.mp4" ;;
    wanfar/mc-p16) "${m[@]}" "${MC[@]}" put --parallel 16 "$STAGE/wanfar.mp4" "far/$b/far.mp4" ;;
    wanfar/rclone-c16) "${m[@]}" "${RCLONE[@]}" copyto --s3-upload-concurrency 16 "$STAGE/wanfar.mp4" "far:$b/far.mp4" ;;
    wan500/watchfolder) wfwan burst -scenario wan500 -bucket "$b" -run "$run" -work "$WORK/runs/$sc-$run" -stage "$STAGE/wan500" ;;
    wan500/mc) "${m[@]}" "${MC[@]}" mirror "$STAGE/wan500" "wan/$b/wan500" ;;
    wan500/rclone) "${m[@]}" "${RCLONE[@]}" copy --transfers 8 "$STAGE/wan500" "wan:$b/wan500" ;;
    wan500/wf-mf8w) wfwan burst -scenario wan500 -bucket "$b" -run "$run" -work "$WORK/runs/$sc-$run" -stage "$STAGE/wan500" \
      -max-files 8 -tool "watchfolder max_files=8" ;;
    resume/watchfolder) wf resume -bucket "$b" -run "$run" -work "$WORK/runs/$sc-$run" -stage "$STAGE/big.mp4" -kill-at "$(kill_at "$run")" ;;
    # Variants with one setting changed, for the recommendations.
    burst/wf-rcpt) wf burst -bucket "$b" -run "$run" -work "$WORK/runs/$sc-$run" -stage "$STAGE/burst" \
      -receipts -tool "watchfolder receipts=true" ;;
    burst/wf-mf8) wf burst -bucket "$b" -run "$run" -work "$WORK/runs/$sc-$run" -stage "$STAGE/burst" \
      -max-files 4 -tool "watchfolder max_files=4" ;;
    resume/wf-c2) wf resume -bucket "$b" -run "$run" -work "$WORK/runs/$sc-$run" -stage "$STAGE/big.mp4" -kill-at "$(kill_at "$run")" \
      -concurrency 2 -tool "watchfolder concurrency=2" ;;
    *) die "no command for $sc/$tool" ;;
  esac
  side1=($(side_ticks))
  "$WFRUN" annotate -results "$RES" -extra "$(awk -v s0="${side0[0]}" -v l0="${side0[1]}" -v s1="${side1[0]}" -v l1="${side1[1]}" -v hz="$CLK_TCK" \
    'BEGIN { printf "store_cpu_s=%.2f,link_cpu_s=%.2f", (s1 - s0) / hz, (l1 - l0) / hz }')"
  [[ -d "$WORK/runs/$sc-$run" ]] && cp "$WORK/runs/$sc-$run"/daemon*.log "$RESULTS_DIR/logs/" 2>/dev/null || true
  rm -rf "$WORK/runs/$sc-$run"
  drop_bucket "$b"
}

declare -A LOAD
for sc in $SCENARIOS; do
  case $sc in
    1gib) tools_for=(watchfolder mc rclone) ;;
    burst) tools_for=(watchfolder mc rclone wf-rcpt wf-mf8) ;;
    resume) tools_for=(watchfolder wf-c2) ;;
    wan1gib) tools_for=(watchfolder mc rclone mc-p16 rclone-c16) ;;
    wanfar) tools_for=(watchfolder mc-p16 rclone-c16) ;;
    wan500) tools_for=(watchfolder mc rclone wf-mf8w) ;;
    *) die "unknown scenario $sc" ;;
  esac
  if [[ -n "${BENCH_BASELINE:-}" && $sc != resume ]]; then tools_for+=(wf-base); fi
  log "scenario $sc: ${tools_for[*]}, $RUNS runs"
  LOAD[$sc]=$(wait_quiet)
  echo "${LOAD[$sc]}"
  for run in $(seq 1 "$RUNS"); do
    for tool in "${tools_for[@]}"; do wants "$tool" || continue; run_tool "$sc" "$tool" "$run"; done
  done
done

log "report"
NOTES="$RESULTS_DIR/notes.md"
{
  cat <<EOF
## How it was measured

One \`bench/run.sh\` run against one MinIO ($MINIO_VERSION) on 127.0.0.1, its data
directory on the same disk as the test files. Random (incompressible) test files, read
once before the first run so every tool reads from a warm page cache; every tool gets a
fresh bucket per run and the same files (watchfolder's runs move them back afterwards).
\`sync\` and a 2 s pause before every run. Tools interleaved: run 1 of each tool, then run 2, ...

- **watchfolder**: a fresh daemon per run (fresh state.db, so peak RSS is this run's),
  engine defaults (part_size 16 MiB, concurrency up to 32, max_files 16, checksum crc32c),
  \`stable_after = "0s"\`. The clock starts at the \`rename(2)\` of the staged file (or
  directory) into the watched folder and stops when every file is in \`processed/\` and the
  control socket counts every job \`done\` (so: detected, committed, uploaded, verified,
  moved; with the receipts=true row, receipt written). CPU = the daemon's utime+stime (\`/proc/PID/stat\`) over that
  interval; peak RSS = its VmHWM.
- **mc** ($MC_VERSION) and **rclone** ($RCLONE_VERSION), defaults except
  \`--transfers 8\` for \`rclone copy\`, configured from the environment
  (\`MC_HOST_bench\`, \`RCLONE_CONFIG_BENCH_*\`, provider Minio). Measured by
  \`bench/cmd/measure\`: wall clock around the process, CPU and peak RSS from its rusage.
- **resume**: a byte-counting TCP proxy (\`bench/cmd/wfrun\`) between the daemon and MinIO;
  SIGKILL once 50 % of the file crossed it (runs 1, 4, ...), 50 % + 1/3 part (runs 2, 5, ...)
  or 50 % + 2/3 part (runs 3, 6, ...), restart on the same state, wait until done. Exactly
  50 % of 1 GiB is a part boundary, the worst moment (the parts in flight have just sent
  their bodies and wait for the store, which drops them when the connection dies); the
  offsets show the rest of a part.
  "media re-sent" = the bodies of PUT requests (UploadPart, PutObject: the media) through
  the proxy minus the file size; "all bytes − file" also counts every request's headers and
  the other calls (create, list, complete), ~75 KB for this upload with no kill at all.
  Wall and CPU in that row are from the restart to done (the restart re-reads the committed
  half to finish the whole-file SHA-256).
- **wan1gib, wan500**: the same MinIO behind \`bench/cmd/wan\`, an in-process toxiproxy
  (github.com/Shopify/toxiproxy/v2 v2.5.0, pinned in go.mod) adding $WAN_ONE_WAY each way
  (RTT = 2 ×) and capping each connection at $WAN_RATE/s upstream (a bandwidth toxic per
  connection, as TCP windows and provider shaping cap each stream of a real uplink; no cap
  on the sum). Every tool goes through it: watchfolder with its defaults (a fresh daemon,
  so nothing learned from an earlier upload), \`mc cp\` and \`rclone copyto\` with their
  defaults (4 parts in flight each), and with their documented parallelism settings:
  \`mc put --parallel 16\` (mc cp has no such flag) and \`rclone copyto
  --s3-upload-concurrency 16\`. wan500: 500 files of 2 MiB, \`mc mirror\` and \`rclone copy
  --transfers 8\` as in the burst; the \`max_files=8\` row is watchfolder with the previous
  default. wanfar: a second proxy, $WANFAR_ONE_WAY each way and $WANFAR_RATE/s per connection,
  the same file; only the peers' parallelism settings are run there (with their defaults,
  4 streams of that link, a run takes a minute). The proxies are separate processes on the
  same 2 cores: at a few hundred MiB/s each is one more CPU consumer, like MinIO.
- Load average (1 min) before each scenario: $(for sc in $SCENARIOS; do printf '%s: %s; ' "$sc" "${LOAD[$sc]:-?}"; done)
- CPU and RSS are the client's only; MinIO shares the same 2 cores with it in every case.
  The "CPU of the run" tables add what the store (MinIO) and the link (the WAN proxies)
  spent during each run (\`/proc/PID/stat\` before and after). Their sum over the cores is
  the shortest wall time the machine allows that tool (the floor); wall / floor shows how
  well a tool keeps the cores busy. Where every tool is near its floor, the machine (not
  the link) decides, and a tool wins only by costing the machine less per byte: its own
  CPU, and the store's (MinIO verifies mc's payload SHA-256, signed over plain HTTP,
  not watchfolder's \`UNSIGNED-PAYLOAD\` with a CRC32C per part).
- The store's CPU for the same upload varies between runs (3 to 9 s per GiB seen). The
  VM reports freed memory to its host (virtio-balloon free page reporting), so MinIO's
  page-cache writes fault in pages the host took back, more so as a run of benchmarks
  goes on; interleaving spreads this over the tools.
EOF
  if [[ -f "$ROOT/bench/notes.md" ]]; then echo; cat "$ROOT/bench/notes.md"; fi
} >"$NOTES"
"$REPORT" -results "$RES" -doc "$DOC" -svg "$SVG" -notes "$NOTES" -part-size "$PART_SIZE" \
  -watchfolder-version "$("$WORK/tools/watchfolder" version 2>/dev/null | head -1)" \
  -mc-version "$MC_VERSION" -rclone-version "$RCLONE_VERSION" -minio-version "$MINIO_VERSION" \
  -go-version "$("$GO" env GOVERSION)" | tee "$RESULTS_DIR/table.md"
echo
echo "results: $RESULTS_DIR   report: ${DOC#$ROOT/}, ${SVG#$ROOT/}"
