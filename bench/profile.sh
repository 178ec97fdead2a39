#!/usr/bin/env bash
# CPU-profiles an in-process agent (bench/inproc_test.go) under the KV PUT,
# health-query and DNS SRV loads, one profile each, and prints the top
# functions. Profiles and their test binary land in bench/profiles/
# (ignored by git), for `go tool pprof -http :0 bench/profiles/bench.test
# bench/profiles/kvput.prof`.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
out=bench/profiles
mkdir -p "$out"

go test -c -o "$out/bench.test" ./bench
for b in ${PROFILES:-KVPut HealthService DNSSRV}; do
	prof="$out/$(echo "$b" | tr '[:upper:]' '[:lower:]').prof"
	(cd bench && "../$out/bench.test" -test.run '^$' -test.bench "^BenchmarkAgent/$b\$" \
		-test.benchtime "${BENCHTIME:-5s}" -test.benchmem -test.cpuprofile "../$prof")
	# The load-driving clients share the process: drop their stacks (the
	# benchmark's own frames, net/http's client connection loops and the
	# DNS client).
	client='trellis/bench\.|net/http\.\(\*persistConn\)|miekg/dns\.\(\*Client\)'
	echo "== $b: top by flat, client stacks excluded (% of all samples)"
	go tool pprof -top -nodecount 25 -ignore "$client" "$out/bench.test" "$prof" 2>/dev/null | sed -n '4,34p'
	echo "== $b: top by cum, stacks through trellis/internal"
	go tool pprof -top -cum -nodecount 35 -focus 'trellis/internal' "$out/bench.test" "$prof" 2>/dev/null | sed -n '9,46p'
done
