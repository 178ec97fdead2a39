#!/usr/bin/env bash
# Measures the Connect control plane and writes bench/results-connect.md:
#   - leaf signings per second on the leader (bench/cmd/leafsign: an
#     in-process server, ECDSA P-256 and RSA-2048 roots);
#   - the time from an intention write to /v1/agent/connect/authorize
#     reflecting it (bench/cmd/intentionlag: an in-process dev agent).
# It reports figures; nothing fails on timing.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

go build -o "$tmp/leafsign" ./bench/cmd/leafsign
go build -o "$tmp/intentionlag" ./bench/cmd/intentionlag

out=bench/results-connect.md
{
	echo "# Connect control plane"
	echo
	echo "$(date -u +%Y-%m-%d), $(go version | awk '{print $3}'), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)," \
		"$(nproc) CPU: $(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -1)"
	echo
	echo "## Leaf signings on the leader"
	echo
	"$tmp/leafsign" -duration 10s -key-type ec
	echo
	"$tmp/leafsign" -duration 10s -key-type rsa -key-bits 2048
	echo
	echo "## Intention write to authorize"
	echo
	"$tmp/intentionlag" -rounds 300
} | tee "$out"
