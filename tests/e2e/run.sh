#!/usr/bin/env bash
# End-to-end test of the trellis binary against unmodified third-party
# Consul clients (python-consul, consul-template, dig), and of the Connect
# CA, intentions and config entries with openssl and the trellis CLI.
#
#   scripts/install-test-deps.sh   # once per machine
#   tests/e2e/run.sh
#
# Builds ./cmd/trellis, starts a dev agent on 127.0.0.1 with ports chosen by
# the OS, runs the checks, stops the agent with SIGTERM and expects exit 0.
# Prints "ok - NAME" or "FAIL - NAME: why" per check and ends with the line
# "e2e: N passed, M failed"; exits 1 if anything failed.
#
# Environment:
#   TOOLS_BIN        where install-test-deps.sh put consul-template (.tools/bin)
#   E2E_KEEP=1       keep the temporary directory (agent logs, rendered files)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
tools_bin=${TOOLS_BIN:-$repo/.tools/bin}
consul_template=$tools_bin/consul-template
python=/usr/bin/python3 # Debian's, which has python3-consul; not a pyenv one

# Only loopback traffic: no proxy may see it, no client may pick up an
# address, token or Vault/Nomad server from the caller's environment.
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY \
	CONSUL_HTTP_ADDR CONSUL_HTTP_TOKEN CONSUL_HTTP_SSL CONSUL_HTTP_SSL_VERIFY \
	CONSUL_HTTP_AUTH CONSUL_TOKEN VAULT_ADDR VAULT_TOKEN NOMAD_ADDR NOMAD_TOKEN
export no_proxy=127.0.0.1,localhost NO_PROXY=127.0.0.1,localhost

# --- prerequisites -------------------------------------------------------------
missing=()
command -v dig >/dev/null 2>&1 || missing+=("dig (dnsutils)")
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v go >/dev/null 2>&1 || missing+=(go)
"$python" -c 'import consul' 2>/dev/null || missing+=("python3-consul for $python")
[[ -x $consul_template ]] || missing+=("$consul_template")
if ((${#missing[@]} > 0)); then
	printf 'e2e: missing: %s\n' "${missing[@]}" >&2
	echo "e2e: run scripts/install-test-deps.sh first" >&2
	exit 1
fi

# --- bookkeeping ---------------------------------------------------------------
work=$(mktemp -d "${TMPDIR:-/tmp}/trellis-e2e.XXXXXX")
agent_pid=
passed=0
failed=0
reported=

cleanup() {
	local rc=$?
	if [[ -n $agent_pid ]] && kill -0 "$agent_pid" 2>/dev/null; then
		kill -TERM "$agent_pid" 2>/dev/null || true
		wait_exit "$agent_pid" 5 || kill -KILL "$agent_pid" 2>/dev/null || true
		wait "$agent_pid" 2>/dev/null || true
	fi
	if [[ -z $reported ]]; then
		# Aborted before the end: count the abort itself as a failure.
		echo "e2e: aborted (exit $rc)" >&2
		echo "e2e: $passed passed, $((failed + 1)) failed"
		((rc != 0)) || rc=1
	fi
	if ((rc != 0 || failed > 0)) && [[ -f $work/agent.stderr ]]; then
		echo "--- agent stderr (last 40 lines) ---" >&2
		tail -n 40 "$work/agent.stderr" >&2 || true
	fi
	if [[ ${E2E_KEEP:-} == 1 ]]; then
		echo "e2e: kept $work" >&2
	else
		rm -rf "$work"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

pass() {
	passed=$((passed + 1))
	printf 'ok - %s\n' "$1"
}

fail() {
	failed=$((failed + 1))
	printf 'FAIL - %s: %s\n' "$1" "$2"
}

# expect_eq NAME GOT WANT
expect_eq() {
	if [[ $2 == "$3" ]]; then
		pass "$1"
	else
		fail "$1" "$(printf 'got\n%s\nwant\n%s' "$2" "$3")"
	fi
}

# wait_exit PID SECONDS: waits for our child PID to exit (a zombie counts:
# kill -0 still succeeds on one), polling, at most SECONDS. Returns 1 on
# timeout.
wait_exit() {
	local pid=$1 deadline=$((SECONDS + $2)) state
	while ((SECONDS <= deadline)); do
		state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || echo gone)
		[[ $state == Z || $state == gone ]] && return 0
		sleep 0.05
	done
	return 1
}

# wait_for DESCRIPTION SECONDS CMD...: runs CMD until it succeeds, at most
# SECONDS. Returns 1 on timeout.
wait_for() {
	local what=$1 deadline=$((SECONDS + $2))
	shift 2
	until "$@" >/dev/null 2>&1; do
		if ((SECONDS > deadline)); then
			echo "e2e: timed out waiting for $what" >&2
			return 1
		fi
		if [[ -n $agent_pid ]] && ! kill -0 "$agent_pid" 2>/dev/null; then
			echo "e2e: agent died while waiting for $what" >&2
			return 1
		fi
		sleep 0.05
	done
}

# api METHOD PATH [BODY]: an HTTP API call; fails on a non-2xx status.
api() {
	local args=(-sS --fail-with-body -m 10 -X "$1")
	[[ $# -ge 3 ]] && args+=(--data-binary "$3")
	curl "${args[@]}" "http://127.0.0.1:$http_port$2"
}

# q ARGS...: dig against the agent, one try, short timeout.
q() {
	dig @127.0.0.1 -p "$dns_port" +time=2 +tries=1 "$@"
}

# sorted_answers ARGS...: the answer section's data (type-specific fields
# only), one record per line, sorted: DNS answers come shuffled.
sorted_answers() {
	q +noall +answer "$@" | awk '{ $1=$2=$3=$4=""; sub(/^ +/, ""); print }' | sort
}

# --- build and start -----------------------------------------------------------
echo "e2e: building trellis" >&2
(cd "$repo" && go build -o "$work/trellis" ./cmd/trellis)

echo "e2e: starting agent" >&2
"$work/trellis" agent -dev -node e2e-agent -client 127.0.0.1 \
	-http-port 0 -dns-port 0 -server-port 0 -serf-lan-port 0 -serf-wan-port 0 -grpc-port -1 \
	>"$work/agent.stdout" 2>"$work/agent.stderr" &
agent_pid=$!

# The agent prints its listeners once they are bound.
wait_for "the agent's DNS address line" 20 grep -q '^ *DNS: ' "$work/agent.stdout"
http_addr=$(sed -n 's/^ *HTTP API: \([^ ,]*\).*/\1/p' "$work/agent.stdout")
dns_addr=$(sed -n 's/^ *DNS: \([^ ,]*\).*/\1/p' "$work/agent.stdout")
http_port=${http_addr##*:}
dns_port=${dns_addr##*:}
if [[ ${http_addr%:*} != 127.0.0.1 || ${dns_addr%:*} != 127.0.0.1 || -z $http_port || -z $dns_port ]]; then
	echo "e2e: unexpected listener addresses: HTTP '$http_addr' DNS '$dns_addr'" >&2
	exit 1
fi
echo "e2e: agent pid $agent_pid, HTTP $http_addr, DNS $dns_addr" >&2

has_leader() { [[ $(api GET /v1/status/leader) == \"?* ]]; }
wait_for "a raft leader" 20 has_leader
node_in_catalog() { api GET /v1/catalog/node/e2e-agent | grep -q '"Node"'; }
wait_for "the agent's node in the catalog" 20 node_in_catalog

# --- a. python-consul ----------------------------------------------------------
echo "e2e: python-consul" >&2
py_rc=0
py_out=$("$python" "$here/python_client.py" "$http_addr" 2>&1) || py_rc=$?
printf '%s\n' "$py_out" | sed -e '/^python_client: passed=/d' -e 's/^\(ok\|FAIL\) - /\1 - python: /'
summary=$(printf '%s\n' "$py_out" | sed -n 's/^python_client: passed=\([0-9]*\) failed=\([0-9]*\)$/\1 \2/p')
if [[ -z $summary ]]; then
	fail "python: python_client.py" "no summary line (exit $py_rc)"
else
	read -r p f <<<"$summary"
	passed=$((passed + p))
	failed=$((failed + f))
	if ((f == 0 && py_rc != 0)); then
		fail "python: python_client.py" "exit $py_rc with no failed check"
	fi
fi

# --- shared data for consul-template and DNS -----------------------------------
# Agent services (synced to the catalog by the agent):
#   web-1 127.0.0.2:9001 [primary v1], TTL check passed  -> passing
#   web-2 127.0.0.3:9002 [v2],         TTL check new     -> critical
# Catalog-only nodes (no agent behind them; addresses are data only):
#   ext1 127.0.0.10: web-3 :9003 [v1], no checks         -> passing
#   ext2 127.0.0.11: web-4 :9004 [],   warning check     -> warning
echo "e2e: registering services" >&2
api PUT /v1/agent/service/register \
	'{"ID":"web-1","Name":"web","Address":"127.0.0.2","Port":9001,"Tags":["primary","v1"],"Check":{"TTL":"300s"}}' >/dev/null
api PUT /v1/agent/service/register \
	'{"ID":"web-2","Name":"web","Address":"127.0.0.3","Port":9002,"Tags":["v2"],"Check":{"TTL":"300s"}}' >/dev/null
api PUT /v1/agent/check/pass/service:web-1 >/dev/null
api PUT /v1/catalog/register \
	'{"Node":"ext1","Address":"127.0.0.10","Service":{"ID":"web-3","Service":"web","Tags":["v1"],"Port":9003}}' >/dev/null
api PUT /v1/catalog/register \
	'{"Node":"ext2","Address":"127.0.0.11","Service":{"ID":"web-4","Service":"web","Port":9004},"Check":{"CheckID":"web-4-check","Name":"web-4 check","Status":"warning","ServiceID":"web-4"}}' >/dev/null
api PUT /v1/kv/e2e/ct/greeting 'hello from trellis' >/dev/null
api PUT /v1/kv/e2e/ct/cfg/alpha 'a' >/dev/null
api PUT /v1/kv/e2e/ct/cfg/beta 'b' >/dev/null
api PUT /v1/kv/e2e/ct/cfg/nested/gamma 'c' >/dev/null
json_len() { "$python" -c 'import json, sys; print(len(json.load(sys.stdin)))'; }
four_web() { [[ $(api GET /v1/health/service/web | json_len) == 4 ]]; }
wait_for "four web instances in /v1/health/service/web" 10 four_web

# --- b. consul-template --------------------------------------------------------
echo "e2e: consul-template" >&2
cat >"$work/in.ctmpl" <<'EOF'
greeting={{ key "e2e/ct/greeting" }}
missing={{ keyOrDefault "e2e/ct/missing" "fallback" }}
present={{ keyOrDefault "e2e/ct/greeting" "unused" }}
{{- range ls "e2e/ct/cfg" }}
ls {{ .Key }}={{ .Value }}
{{- end }}
{{- range tree "e2e/ct/cfg" }}
tree {{ .Key }}={{ .Value }}
{{- end }}
{{- range services }}{{ if ne .Name "consul" }}
services {{ .Name }} [{{ join "," .Tags }}]
{{- end }}{{ end }}
{{- range service "web" }}
healthy {{ .ID }} {{ .Node }} {{ .Address }}:{{ .Port }} [{{ join "," .Tags }}]
{{- end }}
{{- range service "web|any" }}
any {{ .ID }} {{ .Status }}
{{- end }}
{{- range service "web|passing,warning" }}
not-critical {{ .ID }} {{ .Status }}
{{- end }}
{{- range service "v1.web" }}
tag-v1 {{ .ID }} {{ .Address }}:{{ .Port }}
{{- end }}
{{- range nodes }}
node {{ .Node }} {{ .Address }}
{{- end }}
EOF
cat >"$work/want.txt" <<'EOF'
greeting=hello from trellis
missing=fallback
present=hello from trellis
ls alpha=a
ls beta=b
tree alpha=a
tree beta=b
tree nested/gamma=c
services web [primary,v1,v2]
healthy web-1 e2e-agent 127.0.0.2:9001 [primary,v1]
healthy web-3 ext1 127.0.0.10:9003 [v1]
any web-1 passing
any web-2 critical
any web-3 passing
any web-4 warning
not-critical web-1 passing
not-critical web-3 passing
not-critical web-4 warning
tag-v1 web-1 127.0.0.2:9001
tag-v1 web-3 127.0.0.10:9003
node e2e-agent 127.0.0.1
node ext1 127.0.0.10
node ext2 127.0.0.11
EOF
ct_rc=0
timeout 30 "$consul_template" -once -log-level=debug \
	-consul-addr "127.0.0.1:$http_port" -consul-retry-attempts 2 -consul-retry-backoff 100ms -consul-retry-max-backoff 500ms \
	-template "$work/in.ctmpl:$work/out.txt" \
	>"$work/consul-template.log" 2>&1 || ct_rc=$?
if ((ct_rc != 0)); then
	fail "consul-template: -once" "exit $ct_rc; log tail: $(tail -n 15 "$work/consul-template.log")"
elif ! diff_out=$(diff -u "$work/want.txt" "$work/out.txt"); then
	fail "consul-template: rendered output" "$(printf 'diff want got:\n%s' "$diff_out")"
else
	pass "consul-template: rendered output"
fi

# --- c. DNS --------------------------------------------------------------------
echo "e2e: DNS" >&2
# Consul's DNS answers with passing and warning instances, never critical.
expect_eq "dns: web.service.consul A" "$(sorted_answers web.service.consul A)" \
	"$(printf '%s\n' 127.0.0.10 127.0.0.11 127.0.0.2)"
expect_eq "dns: web.service.dc1.consul A" "$(sorted_answers web.service.dc1.consul A)" \
	"$(printf '%s\n' 127.0.0.10 127.0.0.11 127.0.0.2)"
# SRV data is "priority weight port target"; a service address that is an
# IP gets a <hex>.addr.<dc>.<domain> target, else the node's name.
expect_eq "dns: web.service.consul SRV port and target" \
	"$(sorted_answers web.service.consul SRV | awk '{print $3, $4}')" \
	"$(printf '%s\n' '9001 7f000002.addr.dc1.consul.' '9003 ext1.node.dc1.consul.' '9004 ext2.node.dc1.consul.')"
expect_eq "dns: web.service.consul SRV additional A records" \
	"$(q +noall +additional web.service.consul SRV | awk '$4 == "A" {print $1, $5}' | sort)" \
	"$(printf '%s\n' '7f000002.addr.dc1.consul. 127.0.0.2' 'ext1.node.dc1.consul. 127.0.0.10' 'ext2.node.dc1.consul. 127.0.0.11')"
expect_eq "dns: tag lookup primary.web.service.consul A" "$(sorted_answers primary.web.service.consul A)" "127.0.0.2"
expect_eq "dns: tag lookup v1.web.service.consul SRV" \
	"$(sorted_answers v1.web.service.consul SRV | awk '{print $3}')" "$(printf '%s\n' 9001 9003)"
expect_eq "dns: RFC 2782 _web._tcp.service.consul SRV" \
	"$(sorted_answers _web._tcp.service.consul SRV | awk '{print $3, $4}')" \
	"$(printf '%s\n' '9001 7f000002.addr.dc1.consul.' '9003 ext1.node.dc1.consul.' '9004 ext2.node.dc1.consul.')"
expect_eq "dns: RFC 2782 tag _web._v1.service.consul SRV" \
	"$(sorted_answers _web._v1.service.consul SRV | awk '{print $3}')" "$(printf '%s\n' 9001 9003)"
expect_eq "dns: e2e-agent.node.consul A" "$(sorted_answers e2e-agent.node.consul A)" "127.0.0.1"
expect_eq "dns: ext1.node.dc1.consul A" "$(sorted_answers ext1.node.dc1.consul A)" "127.0.0.10"
expect_eq "dns: case-insensitive WEB.Service.Consul A" "$(sorted_answers WEB.Service.Consul A)" \
	"$(printf '%s\n' 127.0.0.10 127.0.0.11 127.0.0.2)"
expect_eq "dns: 7f000002.addr.dc1.consul A" "$(sorted_answers 7f000002.addr.dc1.consul A)" "127.0.0.2"

out=$(q +noall +comments +authority nope.service.consul A) || true
status=$(sed -n 's/.*status: \([A-Z]*\),.*/\1/p' <<<"$out")
soa=$(awk '$4 == "SOA" {print $1, $5}' <<<"$out")
expect_eq "dns: unknown service is NXDOMAIN with the SOA in authority" "$status / $soa" "NXDOMAIN / consul. ns.consul."
out=$(q +noall +comments +authority nope.node.consul A) || true
expect_eq "dns: unknown node is NXDOMAIN" "$(sed -n 's/.*status: \([A-Z]*\),.*/\1/p' <<<"$out")" NXDOMAIN

# Servers register themselves as the "consul" service (Consul's DNS docs
# use consul.service.consul to find them).
expect_eq "dns: consul.service.consul A finds the server" "$(sorted_answers consul.service.consul A)" "127.0.0.1"

# Many instances. Consul cuts a UDP answer to udp_answer_limit (3) records,
# of any type, only when the client's buffer is 512 bytes (no EDNS0), and
# does not set TC for it (enable_truncate is off); with EDNS0 it returns as
# many as fit the buffer. TCP returns them all.
echo "e2e: registering 20 instances of 'many'" >&2
for i in $(seq 1 20); do
	api PUT /v1/catalog/register "$(printf '{"Node":"many-%02d","Address":"127.0.1.%d","Service":{"ID":"many","Service":"many","Port":%d}}' "$i" "$i" $((7000 + i)))" >/dev/null
done
want_a=$(for i in $(seq 1 20); do echo "127.0.1.$i"; done | sort)
expect_eq "dns: many.service.consul A over TCP returns all 20" "$(sorted_answers +tcp many.service.consul A)" "$want_a"
expect_eq "dns: many.service.consul SRV over TCP returns all 20" \
	"$(sorted_answers +tcp many.service.consul SRV | awk '{print $3}' | sort -n)" "$(seq 7001 7020)"

# udp_reply ARGS...: "answers=N tc=yes|no" of one UDP query; +ignore keeps
# dig from retrying over TCP when TC is set.
udp_reply() {
	local out
	out=$(q +notcp +ignore "$@") || true
	printf 'answers=%s tc=%s' \
		"$(sed -n 's/.*ANSWER: \([0-9]*\),.*/\1/p' <<<"$out")" \
		"$(grep -q '^;; flags:[a-z ]* tc[ ;]' <<<"$out" && echo yes || echo no)"
}
expect_eq "dns: many.service.consul A over UDP without EDNS0: 3 answers, no TC" \
	"$(udp_reply +noedns many.service.consul A)" "answers=3 tc=no"
expect_eq "dns: many.service.consul SRV over UDP without EDNS0: 3 answers, no TC" \
	"$(udp_reply +noedns many.service.consul SRV)" "answers=3 tc=no"
expect_eq "dns: many.service.consul A over UDP with EDNS0 (4096): all 20" \
	"$(udp_reply +bufsize=4096 many.service.consul A)" "answers=20 tc=no"

# --- d. connect: CA, intentions, config entries, sidecars -------------------------
echo "e2e: connect" >&2
trellis() { TRELLIS_HTTP_ADDR="127.0.0.1:$http_port" "$work/trellis" "$@"; }
json_field() { "$python" -c 'import json, sys; d = json.load(sys.stdin); print(eval("d" + sys.argv[1]))' "$1"; }

# The CA: a leaf from the agent verifies against the roots with openssl and
# names the service by its SPIFFE ID.
api GET /v1/agent/connect/ca/leaf/web >"$work/leaf.json"
json_field '["CertPEM"]' <"$work/leaf.json" >"$work/leaf.pem"
api GET '/v1/connect/ca/roots?pem=true' >"$work/roots.pem"
td=$(api GET /v1/agent/connect/ca/roots | json_field '["TrustDomain"]')
expect_eq "connect: openssl verifies the leaf against the roots" \
	"$(openssl verify -CAfile "$work/roots.pem" "$work/leaf.pem" 2>&1)" "$work/leaf.pem: OK"
expect_eq "connect: the leaf's URI SAN is web's SPIFFE ID" \
	"$(openssl x509 -in "$work/leaf.pem" -noout -ext subjectAltName | grep -o 'URI:[^,]*' | tr -d ' ')" \
	"URI:spiffe://$td/ns/default/dc/dc1/svc/web"

# Config entries written from HCL by the CLI, intentions through the CLI,
# and /v1/agent/connect/authorize deciding with the leaf's URI.
cat >"$work/db-defaults.hcl" <<'EOF'
Kind     = "service-defaults"
Name     = "db"
Protocol = "http"
EOF
cat >"$work/db-intentions.hcl" <<'EOF'
Kind = "service-intentions"
Name = "db"
Sources = [
  { Name = "web", Action = "deny" },
  {
    Name = "api"
    Permissions = [
      { Action = "allow", HTTP = { PathPrefix = "/v1/", Methods = ["GET"] } }
    ]
  },
  { Name = "*", Action = "allow" }
]
EOF
expect_eq "connect: config write service-defaults (HCL)" "$(trellis config write "$work/db-defaults.hcl" 2>&1)" \
	'Config entry written: service-defaults/db'
expect_eq "connect: config write service-intentions (HCL)" "$(trellis config write "$work/db-intentions.hcl" 2>&1)" \
	'Config entry written: service-intentions/db'
expect_eq "connect: config read shows the protocol" \
	"$(trellis config read -kind service-defaults -name db | json_field '["Protocol"]')" http
bad_rc=0
bad_out=$(api PUT /v1/config '{"Kind":"service-defaults","Name":"db","Protocol":"carrier-pigeon"}' 2>&1) || bad_rc=$?
if ((bad_rc != 0)) && grep -q Protocol <<<"$bad_out" &&
	[[ $(trellis config read -kind service-defaults -name db | json_field '["Protocol"]') == http ]]; then
	pass "connect: a bad entry is refused naming the field and changes nothing"
else
	fail "connect: a bad entry is refused naming the field and changes nothing" "rc=$bad_rc out=$bad_out"
fi
check_rc() { local rc=0; trellis intention check "$@" >/dev/null 2>&1 || rc=$?; echo "$rc"; }
expect_eq "connect: intention check web -> db is denied (exit 2)" "$(check_rc web db)" 2
expect_eq "connect: intention check other -> db is allowed by the wildcard" "$(check_rc other db)" 0
authorize() {
	api POST /v1/agent/connect/authorize \
		"$(printf '{"Target":"%s","ClientCertURI":"spiffe://%s/ns/default/dc/dc1/svc/%s"}' "$2" "$td" "$1")" |
		json_field '["Authorized"]'
}
expect_eq "connect: authorize web -> db (deny intention)" "$(authorize web db)" False
trellis intention create -allow -replace web db >/dev/null 2>&1 || true
expect_eq "connect: authorize web -> db after the intention is replaced by allow" "$(authorize web db)" True

# A sidecar registered by the connect.sidecar_service shorthand, found by
# the connect catalog and by DNS.
api PUT /v1/agent/service/register \
	'{"ID":"pay-1","Name":"pay","Port":9100,"Connect":{"SidecarService":{}}}' >/dev/null
sidecar_port=$(api GET /v1/agent/service/pay-1-sidecar-proxy | json_field '["Port"]')
if ((sidecar_port >= 21000 && sidecar_port <= 21255)); then
	pass "connect: the sidecar got a port from 21000-21255"
else
	fail "connect: the sidecar got a port from 21000-21255" "port $sidecar_port"
fi
expect_eq "connect: /v1/catalog/connect/pay lists the sidecar" \
	"$(api GET /v1/catalog/connect/pay | json_field '[0]["ServiceID"]')" pay-1-sidecar-proxy

# --- e. the demo ------------------------------------------------------------------
echo "e2e: scripts/demo.sh" >&2
demo_rc=0
TRELLIS_BIN="$work/trellis" timeout 120 "$repo/scripts/demo.sh" >"$work/demo.log" 2>&1 || demo_rc=$?
if ((demo_rc == 0)) && grep -q 'Done: allowed, denied by an intention, allowed again.' "$work/demo.log"; then
	pass "demo: a request passes, is refused by a deny intention, and passes again"
else
	fail "demo: a request passes, is refused by a deny intention, and passes again" "exit $demo_rc; log tail: $(tail -n 15 "$work/demo.log")"
fi
# The demo's agent and sidecars run this binary; none may outlive it.
if left=$(pgrep -f -- "^$work/trellis (agent -dev -node demo|connect proxy -sidecar-for (db|web)-1)"); then
	fail "demo: stops what it started" "still running: $(echo "$left" | tr '\n' ' ')"
	echo "$left" | xargs kill 2>/dev/null || true
else
	pass "demo: stops what it started"
fi

# --- stop ----------------------------------------------------------------------
echo "e2e: stopping agent" >&2
kill -TERM "$agent_pid"
if wait_exit "$agent_pid" 10; then
	rc=0
	wait "$agent_pid" || rc=$?
	agent_pid=
	expect_eq "agent: exit status after SIGTERM" "$rc" 0
	if grep -q '==> Trellis agent stopped' "$work/agent.stdout"; then
		pass "agent: prints that it stopped"
	else
		fail "agent: prints that it stopped" "no '==> Trellis agent stopped' on stdout"
	fi
else
	fail "agent: exits within 10s of SIGTERM" "still running"
fi

reported=1
echo "e2e: $passed passed, $failed failed"
((failed == 0))
