#!/usr/bin/env bash
# Cluster-mode benchmark (issue 17): a burst of small files on bbolt vs etcd
# (3 embedded members on loopback), and 3 nodes vs 1 behind per-node
# bandwidth-limited uplinks to MinIO. Prints a table; knobs are the
# WF_BENCH_* variables described in bench/cluster/cluster_test.go.
set -euo pipefail
cd "$(dirname "$0")/.."
# The embedded etcd logs its listeners closing at shutdown as errors.
go test -run '^$' -bench '^BenchmarkCluster$' -benchtime 1x -timeout 30m ./bench/cluster/ 2>&1 |
	grep -v 'embedded etcd failed'
