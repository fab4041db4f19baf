// Package e2e is the end-to-end test of clawmatrix inside real OpenClaw
// gateways. It only builds with the e2e tag:
//
//	bash scripts/install-openclaw.sh
//	go test -tags e2e -count=1 -timeout 15m ./e2e/
//
// The test builds the sidecar, starts a scripted mock model server and two
// OpenClaw 2026.9.6 gateways that load the plugin, and asserts through
// OpenClaw's own CLI and HTTP API that they form one cluster.
package e2e
