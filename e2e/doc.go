// Package e2e is the end-to-end test of clawmatrix inside real OpenClaw
// gateways. It only builds with the e2e tag:
//
//	bash scripts/install-openclaw.sh
//	go test -tags e2e -count=1 -timeout 15m ./e2e/
//
// The test builds the sidecar, starts a scripted mock model server and two
// OpenClaw 2026.9.6 gateways that load the plugin, and asserts through
// OpenClaw's own CLI, HTTP API and WebSocket protocol that they form one
// cluster: remote models and tools (with the user's approval where the
// config asks for it), handoff, the openclaw clawmatrix commands against the
// running gateways, and the cluster tools under OpenClaw's tool search, whose
// cost per request it measures from the request bodies the mock receives.
package e2e
