#!/usr/bin/env bash
# Installs what tests/e2e and tests/partition need on a fresh Debian
# machine, idempotently:
#   - Debian packages python3-consul (the python-consul client, for
#     /usr/bin/python3), dnsutils (dig) and iproute2 (ip, for the
#     network namespaces of tests/partition) and openssl (tests/e2e
#     verifies Connect leaf certificates with it);
#   - consul-template, built from source with the machine's Go into
#     .tools/bin of the repo (override with TOOLS_BIN).
# Each step is skipped when its result is already there, so a second run
# takes well under a second. Needs root for apt-get.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tools_bin=${TOOLS_BIN:-$repo/.tools/bin}

# consul-template v0.42.1 is the version we test against; it builds with
# Go 1.26 (checked when this script was written).
CONSUL_TEMPLATE_VERSION=${CONSUL_TEMPLATE_VERSION:-v0.42.1}

log() { printf 'install-test-deps: %s\n' "$*" >&2; }

# --- Debian packages -------------------------------------------------------
need=()
/usr/bin/python3 -c 'import consul' 2>/dev/null || need+=(python3-consul)
command -v dig >/dev/null 2>&1 || need+=(dnsutils)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
if ((${#need[@]} > 0)); then
	if [[ $(id -u) -ne 0 ]]; then
		log "need root to install: ${need[*]}"
		exit 1
	fi
	log "installing ${need[*]}"
	export DEBIAN_FRONTEND=noninteractive
	# A fresh machine has empty package lists; an old one may have stale ones.
	apt-get update -q >/dev/null
	apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
	/usr/bin/python3 -c 'import consul' || { log "python3-consul installed but 'import consul' fails"; exit 1; }
	command -v dig >/dev/null || { log "dnsutils installed but dig is missing"; exit 1; }
	command -v ip >/dev/null || { log "iproute2 installed but ip is missing"; exit 1; }
	command -v openssl >/dev/null || { log "openssl installed but missing"; exit 1; }
else
	log "python3-consul, dnsutils, iproute2 and openssl already installed"
fi

# --- consul-template -------------------------------------------------------
# The version stamp file records which version the binary was built from,
# so changing CONSUL_TEMPLATE_VERSION triggers a rebuild.
stamp=$tools_bin/.consul-template.version
if [[ -x $tools_bin/consul-template && -f $stamp && $(<"$stamp") == "$CONSUL_TEMPLATE_VERSION" ]]; then
	log "consul-template $CONSUL_TEMPLATE_VERSION already in $tools_bin"
else
	command -v go >/dev/null || { log "go is not on PATH"; exit 1; }
	log "building consul-template $CONSUL_TEMPLATE_VERSION with $(go version | cut -d' ' -f3) into $tools_bin"
	mkdir -p "$tools_bin"
	# pkg@version builds in module mode, ignoring the repo's go.mod.
	GOBIN=$tools_bin go install "github.com/hashicorp/consul-template@$CONSUL_TEMPLATE_VERSION"
	printf '%s\n' "$CONSUL_TEMPLATE_VERSION" >"$stamp"
fi
"$tools_bin/consul-template" -version >&2
