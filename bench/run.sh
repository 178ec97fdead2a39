#!/usr/bin/env bash
# Builds the trellis binary and the load generator, then measures a dev
# agent on loopback and writes the table to bench/results.md. Extra
# arguments go to the load generator (see `go run ./bench/cmd/load -h`).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

go build -o "$tmp/trellis" ./cmd/trellis
go build -o "$tmp/load" ./bench/cmd/load
"$tmp/load" -agent "$tmp/trellis" -out bench/results.md -go-version "$(go version)" "$@"
