#!/usr/bin/env bash
# Checks that the shipped sidecar, cmd/clawmatrix-plugin, links no
# measurement, fault-injection or test machinery: none of internal/bench,
# internal/faultnet, internal/mockllm, no helper package for tests (a name
# ending in "test", as plugin/hosttest), and not the standard library's
# testing or net/http/httptest. Run by `make check`.
set -euo pipefail
cd "$(dirname "$0")/.."
go=${GO:-go}
module="$($go list -m)"
deps="$($go list -deps ./cmd/clawmatrix-plugin)"
bad="$(grep -E "^${module}/(internal/(bench|faultnet|mockllm)|.*test)(/|\$)|^(testing|net/http/httptest)\$" <<<"$deps" || true)"
if [ -n "$bad" ]; then
	echo "check-deps: clawmatrix-plugin links packages that are not for shipping:" >&2
	sed 's/^/  /' <<<"$bad" >&2
	echo "check-deps: see which import brings each in with: go list -deps -f '{{.ImportPath}}: {{.Imports}}' ./cmd/clawmatrix-plugin" >&2
	exit 1
fi
