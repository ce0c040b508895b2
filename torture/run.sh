#!/usr/bin/env bash
# The long reliability suite (make torture): crash torture with >= 30
# SIGKILLs, power-cut torture with >= 50 cuts (on the power-cut FUSE file
# system, internal/powerfs), injected network faults, hostile input,
# secrets, then ~30 s of each fuzzer. Prints a summary of figures; exits
# non-zero on any failure. Needs root and /dev/fuse (the power-cut tests).
#   WF_TORTURE_SEED=N   repeat a run's random choices
#   FUZZTIME=30s        per fuzzer
#   WF_TORTURE_RACE=0   build the daemon without the race detector
set -uo pipefail
cd "$(dirname "$0")/.."
FUZZTIME=${FUZZTIME:-30s}
out=$(mktemp -d /tmp/wf-torture.XXXXXX)
status=0
declare -a summary

echo "== torture suite (log: $out/suite.log)"
go test -tags torture -race -timeout 60m -v -count=1 ./torture/... 2>&1 | tee "$out/suite.log" \
	| grep -E --line-buffered '^(--- |ok|FAIL|PASS)|seed [0-9]+|crash torture:|power cut:|injected faults:|processed unwritable:|hostile input:|files in one directory|secrets:|disk full:|hostile fs:|BUG'
rc=${PIPESTATUS[0]}
[ "$rc" -ne 0 ] && status=1
summary+=("suite: exit $rc")
while IFS= read -r line; do summary+=("  ${line#"${line%%[![:space:]]*}"}"); done < <(
	grep -E 'crash torture:|power cut:|injected faults:|processed unwritable:|hostile input:|files in one directory|secrets:|disk full:|hostile fs:|seed [0-9]+' "$out/suite.log")

echo "== power-cut file system (internal/powerfs)"
if go test -race -count=1 ./internal/powerfs/ >"$out/powerfs.log" 2>&1; then
	summary+=("power-cut file system tests: ok")
else
	status=1
	summary+=("power-cut file system tests: FAILED (see $out/powerfs.log)")
	tail -20 "$out/powerfs.log"
fi

echo "== cluster: 300 files over 3 nodes and a 3-member etcd"
if WF_CLUSTER_FILES=300 go test -race -count=1 -timeout 20m -v -run '^TestClusterThreeNodes$' ./e2e/ >"$out/cluster.log" 2>&1; then
	summary+=("cluster 300 files: ok ($(grep -Eo 'node[0-9] wrote [0-9]+ objects' "$out/cluster.log" | paste -sd, -))")
else
	status=1
	summary+=("cluster 300 files: FAILED (see $out/cluster.log)")
	tail -20 "$out/cluster.log"
fi

fuzz() { # package target
	echo "== fuzz $2 ($FUZZTIME)"
	if go test -run '^$' -fuzz "^$2\$" -fuzztime "$FUZZTIME" "$1" >"$out/fuzz-$2.log" 2>&1; then
		summary+=("fuzz $2: ok ($(grep -Eo 'execs: [0-9]+' "$out/fuzz-$2.log" | tail -1))")
	else
		status=1
		summary+=("fuzz $2: FAILED (see $out/fuzz-$2.log; the failing input is under $1/testdata/fuzz/$2)")
		tail -20 "$out/fuzz-$2.log"
	fi
}
fuzz ./internal/keytmpl FuzzRender
fuzz ./config FuzzParse
fuzz ./uploader FuzzParseMetadata
fuzz ./probe FuzzReader

echo
echo "== torture summary"
for s in "${summary[@]}"; do echo "$s"; done
skips=$(grep -c -- '--- SKIP' "$out/suite.log")
echo "skipped tests: $skips"; grep -E '_test.go:[0-9]+: (BUG|long suite only)' "$out/suite.log" | sort -u | sed 's/^ */  /'
[ "$status" -eq 0 ] && echo "RESULT: PASS" || echo "RESULT: FAIL"
exit $status
