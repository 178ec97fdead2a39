#!/usr/bin/env bash
# shellcheck disable=SC2317 # functions called through traps and wait_for
# Measures the data plane with fortio and writes bench/results-dataplane.md:
# latency added to an HTTP echo by one HAProxy hop and by the two Trellis
# sidecars (mTLS between them) in L4 (tcp) and L7 (http) mode, the
# sidecars' CPU per request and memory, and the highest rate each path
# serves. It reports figures; nothing fails on timing.
#
#   bench/dataplane/run.sh                        (or: make -C bench dataplane)
#   DURATION=3s ROUNDS=1 MAXQPS_DURATION=3s bench/dataplane/run.sh   (a smoke run)
#
# Environment:
#   DURATION          each fixed-rate run (default 30s)
#   ROUNDS            interleaved rounds of the fixed-rate runs (default 5)
#   MAXQPS_DURATION   each max-QPS run (default 15s)
#   MAXQPS_ROUNDS     interleaved rounds of the max-QPS runs (default ROUNDS)
#   MAXQPS_CONC       fortio -c of the max-QPS runs (default 16)
#   QPS               the fixed rate (default 1000); CONCS its -c values (default "16 4")
#   WARMUP            an unrecorded run per path before the rounds (default 3s; 0 skips)
#   OUT               the report (default bench/results-dataplane.md)
#   TRELLIS_BIN       a trellis binary to use instead of building one (the
#                     script builds it as `make build` does: static, no cgo)
#   SIDECAR_ENV       variables for the sidecars only, "GOGC=200 GOMAXPROCS=2"
#   KEEP=1            keep the working directory (logs, fortio JSON, runs.tsv)
#
# Everything listens on 127.0.0.1 on ports the OS picks and is stopped
# when the script ends, however it ends.
set -euo pipefail

# The script is one compound command, which bash reads whole before it
# runs it: changing the file during a run (a checkout) cannot break it.
{

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"

DURATION=${DURATION:-30s}
ROUNDS=${ROUNDS:-5}
MAXQPS_DURATION=${MAXQPS_DURATION:-15s}
MAXQPS_ROUNDS=${MAXQPS_ROUNDS:-$ROUNDS}
MAXQPS_CONC=${MAXQPS_CONC:-16}
QPS=${QPS:-1000}
CONCS=${CONCS:-16 4}
WARMUP=${WARMUP:-3s}
OUT=${OUT:-bench/results-dataplane.md}
PATHS=(direct haproxy trellis-l4 trellis-l7)
PERCENTILES=50,90,99,99.9 # what dpbench reports

work=$(mktemp -d "${TMPDIR:-/tmp}/trellis-dataplane.XXXXXX")
pids=()      # long-running processes, stopped at exit
load_pid=""  # the fortio load running now, if any
cleanup() {
	local rc=$?
	if [[ -n $load_pid ]]; then kill "$load_pid" 2>/dev/null || true; fi
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	if [[ ${KEEP:-} == 1 || $rc -ne 0 ]]; then
		echo "dataplane: kept $work" >&2
	else
		rm -rf "$work"
	fi
}
trap cleanup EXIT
# A signal ends the script through the EXIT trap (bash would otherwise
# wait for the foreground command first).
trap 'exit 130' INT TERM
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY

log() { printf 'dataplane: %s\n' "$*" >&2; }
wait_for() { # DESCRIPTION CMD...: run CMD until it succeeds, at most 30 s
	local what=$1 deadline=$((SECONDS + 30))
	shift
	until "$@" >/dev/null 2>&1; do
		((SECONDS < deadline)) || { log "timed out waiting for $what"; return 1; }
		sleep 0.1
	done
}

# --- build and tools -------------------------------------------------------
./scripts/install-bench-deps.sh
fortio=${TOOLS_BIN:-$root/.tools/bin}/fortio
haproxy=$(command -v haproxy || echo /usr/sbin/haproxy)
if [[ -n ${TRELLIS_BIN:-} ]]; then
	trellis=$TRELLIS_BIN
else
	log "building trellis"
	CGO_ENABLED=0 go build -o "$work/trellis" ./cmd/trellis
	trellis=$work/trellis
fi
go build -o "$work/dpbench" ./bench/dataplane/dpbench
mapfile -t ports < <("$work/dpbench" ports 5)
echo_port=${ports[0]} haproxy_port=${ports[1]} echo_sidecar_port=${ports[2]} client_sidecar_port=${ports[3]} upstream_port=${ports[4]}

# --- the echo server and haproxy ------------------------------------------
"$fortio" server -http-port "127.0.0.1:$echo_port" -grpc-port disabled -redirect-port disabled \
	-tcp-port disabled -udp-port disabled -data-dir "$work" -loglevel warning >"$work/echo.log" 2>&1 &
server_pid=$!
pids+=("$server_pid")

cat >"$work/haproxy.cfg" <<EOF
global
	maxconn 4096
defaults
	mode http
	option http-keep-alive
	timeout connect 5s
	timeout client 60s
	timeout server 60s
frontend echo
	bind 127.0.0.1:$haproxy_port
	default_backend echo
backend echo
	server echo 127.0.0.1:$echo_port
EOF
# -db: stay in the foreground, so that $! is haproxy itself.
"$haproxy" -db -f "$work/haproxy.cfg" >"$work/haproxy.log" 2>&1 &
haproxy_pid=$!
pids+=("$haproxy_pid")

# --- the agent, the services and their sidecars ----------------------------
"$trellis" agent -dev -node bench -client 127.0.0.1 -bind 127.0.0.1 -http-port 0 -dns-port -1 -server-port 0 \
	-serf-lan-port 0 -serf-wan-port 0 -grpc-port 0 -log-level warn >"$work/agent.out" 2>"$work/agent.err" &
agent_pid=$!
pids+=("$agent_pid")
wait_for "the agent" grep -q 'gRPC (xDS): 127' "$work/agent.out"
TRELLIS_HTTP_ADDR=$(sed -n 's/^ *HTTP API: \([^ ,]*\).*/\1/p' "$work/agent.out")
TRELLIS_GRPC_ADDR=$(sed -n 's/^ *gRPC (xDS): \([^ ,]*\).*/\1/p' "$work/agent.out")
export TRELLIS_HTTP_ADDR TRELLIS_GRPC_ADDR

# write_protocol tcp|http: echo's service-defaults, which both sidecars'
# configurations follow (echo's public listener, the client's upstream).
write_protocol() {
	printf '{"Kind": "service-defaults", "Name": "echo", "Protocol": "%s"}\n' "$1" >"$work/echo-defaults.json"
	"$trellis" config write "$work/echo-defaults.json" >/dev/null
}
write_protocol tcp
mode=tcp

register() {
	curl -sS --fail -X PUT "http://$TRELLIS_HTTP_ADDR/v1/agent/service/register" --data "$1" >/dev/null
}
# The sidecars' checks (instead of the default 10 s) let echo's sidecar
# pass soon after it listens; only passing instances are sent to clients.
register "{\"ID\": \"echo\", \"Name\": \"echo\", \"Address\": \"127.0.0.1\", \"Port\": $echo_port,
  \"Connect\": {\"SidecarService\": {\"Port\": $echo_sidecar_port,
    \"Checks\": [{\"Name\": \"listening\", \"TCP\": \"127.0.0.1:$echo_sidecar_port\", \"Interval\": \"1s\"}]}}}"
register "{\"ID\": \"client\", \"Name\": \"client\", \"Address\": \"127.0.0.1\", \"Port\": 1,
  \"Connect\": {\"SidecarService\": {\"Port\": $client_sidecar_port,
    \"Checks\": [{\"Name\": \"listening\", \"TCP\": \"127.0.0.1:$client_sidecar_port\", \"Interval\": \"1s\"}],
    \"Proxy\": {\"Upstreams\": [{\"DestinationName\": \"echo\", \"LocalBindAddress\": \"127.0.0.1\", \"LocalBindPort\": $upstream_port}]}}}}"

declare -A sidecar_pid admin
read -ra sidecar_env <<<"${SIDECAR_ENV:-}" # NAME=value words
for svc in echo client; do
	env "${sidecar_env[@]}" "$trellis" connect proxy -sidecar-for "$svc" -admin-bind 127.0.0.1:0 -log-level warn \
		>"$work/sidecar-$svc.out" 2>"$work/sidecar-$svc.err" &
	sidecar_pid[$svc]=$!
	pids+=($!)
done
for svc in echo client; do
	wait_for "the $svc sidecar" grep -q 'admin on http' "$work/sidecar-$svc.out"
	admin[$svc]=$(sed -n 's/.*admin on \(http:[^ ]*\).*/\1/p' "$work/sidecar-$svc.out")
	wait_for "the $svc sidecar to be ready" curl -sS --fail --max-time 2 "${admin[$svc]}/ready"
done

probe() { # URL: one echo request
	curl -sS --fail --max-time 2 -d probe "$1" | grep -q '^probe$'
}
wait_for "the echo server" probe "http://127.0.0.1:$echo_port/echo"
wait_for "haproxy" probe "http://127.0.0.1:$haproxy_port/echo"
wait_for "the upstream listener" probe "http://127.0.0.1:$upstream_port/echo"

applies() { # SVC: configurations the sidecar applied
	curl -sS --fail --max-time 2 "${admin[$1]}/stats" |
		awk '/^trellis_proxy_config_applies_total\{result="ok"\}/ {print $2; found=1} END {if (!found) print 0}'
}
releases() { # SVC: times the sidecar gave back its binary's pages (0 if it does not)
	curl -sS --fail --max-time 2 "${admin[$1]}/stats" |
		awk '/^trellis_proxy_memory_releases_total / {print $2; found=1} END {if (!found) print 0}'
}
# released_since SVC COUNT: the sidecar gave back its binary's pages
# since its count was COUNT.
released_since() { (($(releases "$1") > $2)); }
# wait_release SVC COUNT: wait for a release since COUNT, which a sidecar
# makes 2 s after its configuration settled; a sidecar that does not
# release (an older TRELLIS_BIN) only costs the wait.
wait_release() {
	wait_for "the $1 sidecar to give back its binary's pages" released_since "$1" "$2" ||
		log "going on without the $1 sidecar's release"
}
# settled SVC...: true once the sidecars' applied configurations stay the
# same for a second; a config entry reaches them in one or more pushes.
settled() {
	local last="" now i
	for ((i = 0; i < 10; i++)); do
		now=""
		for s in "$@"; do now+="$(applies "$s") "; done
		[[ -z $last || $now == "$last" ]] || return 1
		last=$now
		sleep 0.1
	done
}
# set_mode tcp|http: switch echo's protocol and wait until both sidecars
# have applied the change and the upstream listener serves again.
set_mode() {
	[[ $mode == "$1" ]] && return
	local before_echo before_client rel_echo rel_client
	before_echo=$(applies echo) before_client=$(applies client)
	rel_echo=$(releases echo) rel_client=$(releases client)
	write_protocol "$1"
	changed() { (($(applies echo) > before_echo && $(applies client) > before_client)); }
	wait_for "both sidecars to apply protocol $1" changed
	wait_for "the sidecars' configurations to settle" settled echo client
	# The release that follows a new configuration would land in the
	# first run otherwise.
	wait_release echo "$rel_echo"
	wait_release client "$rel_client"
	wait_for "the upstream listener in $1 mode" probe "http://127.0.0.1:$upstream_port/echo"
	mode=$1
	log "echo's protocol is $1"
}

# The release after the sidecars' first configuration, so that set_mode
# waits for the one after its own.
wait_release echo 0
wait_release client 0

# Does the sidecar run http listeners as HTTP? It counts HTTP requests
# once its L7 engine does; until then it proxies them as TCP.
set_mode http
probe "http://127.0.0.1:$upstream_port/echo"
if curl -sS --fail --max-time 2 "${admin[client]}/stats" |
	awk '/^trellis_proxy_http_requests_total[{ ]/ && $NF > 0 {found=1} END {exit !found}'; then
	l7_engine=yes
else
	l7_engine=no
fi
log "L7 engine serving http listeners: $l7_engine"

mem_of() { # PID: its resident memory in KiB, in total and split; Pss shares shared pages out
	awk '/^(VmRSS|RssAnon|RssFile|Pss):/ {sub(":", "", $1); printf "%s%s=%s", sep, $1, $2; sep=" "} END {print ""}' \
		"/proc/$1/status" "/proc/$1/smaps_rollup" 2>/dev/null || true
}
# A sidecar gives back the pages of the binary that starting and
# configuring touched once its configuration has been quiet for 2 s;
# set_mode waited for that, so the idle figures are of after it.
mem_idle_client=$(mem_of "${sidecar_pid[client]}") mem_idle_echo=$(mem_of "${sidecar_pid[echo]}")

# --- sampling ----------------------------------------------------------------
url_of() {
	case $1 in
	direct) echo "http://127.0.0.1:$echo_port/echo" ;;
	haproxy) echo "http://127.0.0.1:$haproxy_port/echo" ;;
	trellis-l4 | trellis-l7) echo "http://127.0.0.1:$upstream_port/echo" ;;
	esac
}
mode_of() { case $1 in trellis-l7) echo http ;; *) echo tcp ;; esac; }

cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; } # utime+stime, fields 14-15
peak_rss_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }
reset_peak() { echo 5 >"/proc/$1/clear_refs" 2>/dev/null || true; } # VmHWM := VmRSS
# children_ticks: CPU of this script's reaped children (cutime+cstime,
# fields 16-17), which around a run is fortio load's. $$ is this script's
# PID in subshells too.
children_ticks() { sed 's/.*) //' "/proc/$$/stat" | awk '{print $14 + $15}'; }
machine_ticks() { # busy irq steal total, over all CPUs
	awk '/^cpu / {print $2+$3+$4+$7+$8, $7+$8, $9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat
}
now_ms() { date +%s%3N; }
sampled=("${sidecar_pid[client]}" "${sidecar_pid[echo]}" "$haproxy_pid" "$server_pid" "$agent_pid")
cpu_all() { for p in "${sampled[@]}"; do printf '%s ' "$(cpu_ticks "$p")"; done; }

printf '%s\n' "phase round path conc json cpu_client cpu_echo cpu_haproxy cpu_server cpu_agent cpu_load" \
	"hwm_client hwm_echo hwm_haproxy busy irq steal total wall_ms" | paste -sd ' ' | tr ' ' '\t' >"$work/runs.tsv"
n=0
# measure PHASE ROUND PATH CONC QPS DURATION: one recorded fortio run.
measure() {
	local phase=$1 round=$2 path=$3 conc=$4 qps=$5 dur=$6
	set_mode "$(mode_of "$path")"
	n=$((n + 1))
	local json
	json=$(printf '%03d-%s-%s-c%s.json' "$n" "$phase" "$path" "$conc")
	for p in "${sampled[@]}"; do reset_peak "$p"; done
	local cpu0 m0 cpu1 m1 load0 load1 t0 t1
	read -ra cpu0 <<<"$(cpu_all)"
	read -ra m0 <<<"$(machine_ticks)"
	load0=$(children_ticks) t0=$(now_ms)
	"$fortio" load -quiet -qps "$qps" -c "$conc" -t "$dur" -payload-size 1024 -r 0.00001 -p "$PERCENTILES" \
		-json "$work/$json" "$(url_of "$path")" >"$work/load.log" 2>&1 &
	load_pid=$!
	wait "$load_pid" || { log "fortio failed on $path -c $conc:"; cat "$work/load.log" >&2; return 1; }
	load_pid=""
	t1=$(now_ms) load1=$(children_ticks)
	read -ra cpu1 <<<"$(cpu_all)"
	read -ra m1 <<<"$(machine_ticks)"
	local row=("$phase" "$round" "$path" "$conc" "$json")
	for i in "${!cpu0[@]}"; do row+=($((cpu1[i] - cpu0[i]))); done
	row+=($((load1 - load0)))
	row+=("$(peak_rss_kib "${sidecar_pid[client]}")" "$(peak_rss_kib "${sidecar_pid[echo]}")" "$(peak_rss_kib "$haproxy_pid")")
	for i in "${!m0[@]}"; do row+=($((m1[i] - m0[i]))); done
	row+=($((t1 - t0)))
	(IFS=$'\t'; echo "${row[*]}") >>"$work/runs.tsv"
	log "$(printf '%-5s round %s %-10s -c %-2s %s' "$phase" "$round" "$path" "$conc" \
		"$(grep -o 'All done.*' "$work/load.log" || true)")"
}

# rotated R: the paths starting at the R-th, so that no path always runs
# right after the same other one (and after a mode switch).
rotated() {
	local r=$1 i
	for ((i = 0; i < ${#PATHS[@]}; i++)); do echo "${PATHS[(r + i) % ${#PATHS[@]}]}"; done
}

# --- the runs ------------------------------------------------------------------
cat >"$work/meta.txt" <<EOF
date=$(date -u +%Y-%m-%d)
go=$(go version | awk '{print $3}')
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
nproc=$(nproc)
cpu=$(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -1)
fortio=$("$fortio" version 2>&1 | head -1)
haproxy=HAProxy $("$haproxy" -v | awk 'NR==1 {print $3}')
qps=$QPS
concs=$CONCS
duration=$DURATION
rounds=$ROUNDS
maxqps_duration=$MAXQPS_DURATION
maxqps_rounds=$MAXQPS_ROUNDS
maxqps_conc=$MAXQPS_CONC
l7_engine=$l7_engine
sidecar_env=${SIDECAR_ENV:-}
mem_idle_client=$mem_idle_client
mem_idle_echo=$mem_idle_echo
EOF

if [[ $WARMUP != 0 ]]; then
	log "warming up each path for $WARMUP"
	for path in "${PATHS[@]}"; do
		set_mode "$(mode_of "$path")"
		"$fortio" load -quiet -qps "$QPS" -c 16 -t "$WARMUP" -payload-size 1024 "$(url_of "$path")" >"$work/load.log" 2>&1 &
		load_pid=$!
		wait "$load_pid"
		load_pid=""
	done
fi

log "$ROUNDS rounds at $QPS QPS, -c {$CONCS}, $DURATION each"
for ((r = 0; r < ROUNDS; r++)); do
	for path in $(rotated "$r"); do
		for c in $CONCS; do measure qps $((r + 1)) "$path" "$c" "$QPS" "$DURATION"; done
	done
done
log "$MAXQPS_ROUNDS rounds at max QPS, -c $MAXQPS_CONC, $MAXQPS_DURATION each"
for ((r = 0; r < MAXQPS_ROUNDS; r++)); do
	for path in $(rotated "$r"); do measure max $((r + 1)) "$path" "$MAXQPS_CONC" 0 "$MAXQPS_DURATION"; done
done

{
	echo "mem_end_client=$(mem_of "${sidecar_pid[client]}")"
	echo "mem_end_echo=$(mem_of "${sidecar_pid[echo]}")"
	echo "mem_end_haproxy=$(mem_of "$haproxy_pid")"
} >>"$work/meta.txt"
"$work/dpbench" report -dir "$work" -clk-tck "$(getconf CLK_TCK)" -out "$OUT"
log "wrote $OUT"
exit
}
