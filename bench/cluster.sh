#!/usr/bin/env bash
# Builds the trellis binary and the load generator, then measures a
# three-server cluster on 127.0.0.11-13 and writes the table to
# bench/results-cluster.md. The servers' data dirs and logs live in a
# temporary directory removed at the end; the load generator kills the
# servers however it ends (and the kernel does, should it be killed).
# Extra arguments go to `load cluster` (see `go run ./bench/cmd/load cluster -h`).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

go build -o "$tmp/trellis" ./cmd/trellis
go build -o "$tmp/load" ./bench/cmd/load
mkdir "$tmp/cluster"
"$tmp/load" cluster -agent "$tmp/trellis" -dir "$tmp/cluster" -out bench/results-cluster.md -go-version "$(go version)" "$@"
