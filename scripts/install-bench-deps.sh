#!/usr/bin/env bash
# Installs what bench/dataplane needs on a fresh Debian machine,
# idempotently:
#   - the Debian package haproxy (the single-hop reference path);
#   - fortio (load generator and echo server), built from source with the
#     machine's Go into .tools/bin of the repo (override with TOOLS_BIN).
# Each step is skipped when its result is already there, so a second run
# takes well under a second. Needs root for apt-get. CI does not run the
# benchmarks, so nothing in the test path calls this script.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tools_bin=${TOOLS_BIN:-$repo/.tools/bin}

# fortio v1.68.2 builds with Go 1.26; later versions did not when this
# script was written.
FORTIO_VERSION=${FORTIO_VERSION:-v1.68.2}

log() { printf 'install-bench-deps: %s\n' "$*" >&2; }

# --- Debian packages -------------------------------------------------------
# haproxy lives in /usr/sbin, which a non-login root shell may lack on PATH.
if command -v haproxy >/dev/null 2>&1 || [[ -x /usr/sbin/haproxy ]]; then
	log "haproxy already installed"
else
	if [[ $(id -u) -ne 0 ]]; then
		log "need root to install: haproxy"
		exit 1
	fi
	log "installing haproxy"
	export DEBIAN_FRONTEND=noninteractive
	# A fresh machine has empty package lists; an old one may have stale ones.
	apt-get update -q >/dev/null
	apt-get install -y -q --no-install-recommends haproxy >/dev/null
	[[ -x /usr/sbin/haproxy ]] || { log "haproxy installed but /usr/sbin/haproxy is missing"; exit 1; }
	# The package enables and starts a system-wide haproxy on port 80; the
	# bench runs its own, so stop that one where a service manager runs it.
	if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet haproxy 2>/dev/null; then
		systemctl stop haproxy || true
	fi
fi

# --- fortio ----------------------------------------------------------------
# The version stamp file records which version the binary was built from,
# so changing FORTIO_VERSION triggers a rebuild.
stamp=$tools_bin/.fortio.version
if [[ -x $tools_bin/fortio && -f $stamp && $(<"$stamp") == "$FORTIO_VERSION" ]]; then
	log "fortio $FORTIO_VERSION already in $tools_bin"
else
	command -v go >/dev/null || { log "go is not on PATH"; exit 1; }
	log "building fortio $FORTIO_VERSION with $(go version | cut -d' ' -f3) into $tools_bin"
	mkdir -p "$tools_bin"
	# pkg@version builds in module mode, ignoring the repo's go.mod.
	GOBIN=$tools_bin go install "fortio.org/fortio@$FORTIO_VERSION"
	printf '%s\n' "$FORTIO_VERSION" >"$stamp"
fi
"$tools_bin/fortio" version >&2
