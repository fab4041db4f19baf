#!/usr/bin/env bash
# Installs Verdaccio, a private npm registry, into a git-ignored cache for the
# end-to-end test of installing the plugin from a registry (e2e/npm_test.go).
#
# Usage: scripts/install-verdaccio.sh   prints the path of verdaccio's launcher
# Env:   CLAWMATRIX_VERDACCIO_CACHE  cache dir (default <repo>/.cache/verdaccio)
#        CLAWMATRIX_OPENCLAW_CACHE   where scripts/install-openclaw.sh put Node 24
#                                    (default <repo>/.cache/openclaw); Verdaccio
#                                    6.10 needs Node 22 or later
#        VERDACCIO_VERSION           default 6.10.4
#
# Idempotent: a second run with a complete install only checks the version.
# The test runs Verdaccio on 127.0.0.1 with no uplinks: it serves only what
# the test publishes.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${CLAWMATRIX_VERDACCIO_CACHE:-$repo_root/.cache/verdaccio}"
openclaw_cache="${CLAWMATRIX_OPENCLAW_CACHE:-$repo_root/.cache/openclaw}"
version="${VERDACCIO_VERSION:-6.10.4}"

log() { echo "install-verdaccio: $*" >&2; }
die() { log "error: $*"; exit 1; }

command -v npm >/dev/null 2>&1 || die "npm not found on PATH; install Node.js and npm (any version) first"
node_bin_dir="$openclaw_cache/bin"
[ -x "$node_bin_dir/node" ] || die "no Node in $node_bin_dir: run scripts/install-openclaw.sh first"

launcher="$cache/node_modules/verdaccio/bin/verdaccio"
installed_ok() {
	local pj="$cache/node_modules/verdaccio/package.json"
	[ -f "$pj" ] && [ -f "$launcher" ] || return 1
	[ "$("$node_bin_dir/node" -p "require(process.argv[1]).version" "$pj" 2>/dev/null)" = "$version" ]
}

if ! installed_ok; then
	log "installing verdaccio@$version into $cache (about 15 s, ~70 MB)"
	mkdir -p "$cache"
	[ -f "$cache/package.json" ] || echo '{"private": true}' > "$cache/package.json"
	PATH="$node_bin_dir:$PATH" npm_config_cache="$cache/.npm" npm_config_update_notifier=false \
		npm install --prefix "$cache" --save-exact --no-audit --no-fund --loglevel=error "verdaccio@$version" >&2 \
		|| die "npm install verdaccio@$version failed"
	installed_ok || die "verdaccio@$version did not install into $cache"
fi
echo "$launcher"
