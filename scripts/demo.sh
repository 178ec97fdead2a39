#!/usr/bin/env bash
# The mesh in one minute: a dev agent, two services (web and db) with
# Trellis sidecars, web reaching db through its upstream over mTLS, a deny
# intention refusing it, and the intention removed again.
#
#   scripts/demo.sh          (or: make demo)
#
# TRELLIS_BIN=path uses that binary instead of building one; DEMO_KEEP=1
# keeps the working directory (logs).
#
# Everything runs on 127.0.0.1 with ports the OS picks, and stops when the
# script ends. It exits non-zero if any step does not behave as shown.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/trellis-demo.XXXXXX")
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	if [[ ${DEMO_KEEP:-} == 1 ]]; then echo "demo: kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY
say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { # DESCRIPTION CMD...: run CMD until it succeeds, at most 30 s
	local what=$1 deadline=$((SECONDS + 30))
	shift
	until "$@" >/dev/null 2>&1; do
		((SECONDS < deadline)) || { echo "demo: timed out waiting for $what" >&2; return 1; }
		sleep 0.1
	done
}

if [[ -n ${TRELLIS_BIN:-} ]]; then
	bin=$TRELLIS_BIN # a binary already built (tests/e2e passes its own)
else
	say "Building trellis"
	(cd "$repo" && go build -o "$work/trellis" ./cmd/trellis)
	bin=$work/trellis
fi
trellis() { "$bin" "$@"; }
# Background processes run "$bin" itself, not the function: $! must be
# the process that cleanup kills, not a subshell that would leave it.

say "Starting a dev agent"
"$bin" agent -dev -node demo -client 127.0.0.1 -bind 127.0.0.1 -http-port 0 -dns-port -1 -server-port 0 \
	-serf-lan-port 0 -serf-wan-port 0 -grpc-port 0 -log-level warn >"$work/agent.out" 2>"$work/agent.err" &
pids+=($!)
wait_for "the agent" grep -q 'gRPC (xDS): 127' "$work/agent.out"
http_addr=$(sed -n 's/^ *HTTP API: \([^ ,]*\).*/\1/p' "$work/agent.out")
grpc_addr=$(sed -n 's/^ *gRPC (xDS): \([^ ,]*\).*/\1/p' "$work/agent.out")
export TRELLIS_HTTP_ADDR=$http_addr TRELLIS_GRPC_ADDR=$grpc_addr
echo "agent: HTTP $http_addr, xDS $grpc_addr"

say "Starting the db application (an HTTP server) and registering web and db with sidecars"
mkdir -p "$work/db"
echo "hello from db" >"$work/db/index.html"
db_port=$(free_port)
python3 -m http.server "$db_port" --bind 127.0.0.1 --directory "$work/db" >/dev/null 2>&1 &
pids+=($!)
db_sidecar=$(free_port) web_sidecar=$(free_port) upstream=$(free_port)
curl -sS --fail -X PUT "http://$http_addr/v1/agent/service/register" --data "{
  \"ID\": \"db-1\", \"Name\": \"db\", \"Port\": $db_port,
  \"Connect\": {\"SidecarService\": {\"Port\": $db_sidecar,
    \"Checks\": [{\"Name\": \"listening\", \"TCP\": \"127.0.0.1:$db_sidecar\", \"Interval\": \"500ms\"}]}}}"
curl -sS --fail -X PUT "http://$http_addr/v1/agent/service/register" --data "{
  \"ID\": \"web-1\", \"Name\": \"web\", \"Port\": $(free_port),
  \"Connect\": {\"SidecarService\": {\"Port\": $web_sidecar,
    \"Checks\": [{\"Name\": \"listening\", \"TCP\": \"127.0.0.1:$web_sidecar\", \"Interval\": \"500ms\"}],
    \"Proxy\": {\"Upstreams\": [{\"DestinationName\": \"db\", \"LocalBindPort\": $upstream}]}}}}"
echo "web reaches db at 127.0.0.1:$upstream (its upstream), through web's and db's sidecars"

say "Starting the two sidecars: trellis connect proxy -sidecar-for db-1 / web-1"
for svc in db-1 web-1; do
	"$bin" connect proxy -sidecar-for "$svc" -admin-bind 127.0.0.1:0 >"$work/$svc.out" 2>"$work/$svc.err" &
	pids+=($!)
	wait_for "the $svc sidecar" grep -q 'started' "$work/$svc.out"
	cat "$work/$svc.out"
done

request() { curl -sS --max-time 3 "http://127.0.0.1:$upstream/"; }

say "web -> db: a request through the mesh (mTLS between the sidecars)"
wait_for "a request to pass" request
echo "\$ curl http://127.0.0.1:$upstream/"
request

say "trellis intention create -deny web db"
trellis intention create -deny web db
refused() { ! request; }
wait_for "the request to be refused" refused
echo "\$ curl http://127.0.0.1:$upstream/"
request 2>&1 || echo "(refused by db's sidecar: web may not talk to db)"

say "trellis intention delete web db"
trellis intention delete web db
wait_for "requests to pass again" request
echo "\$ curl http://127.0.0.1:$upstream/"
request

say "Done: allowed, denied by an intention, allowed again."
