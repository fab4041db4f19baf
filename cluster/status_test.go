package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/clawmatrix/clawmatrix/cluster/identity"
	"github.com/clawmatrix/clawmatrix/cluster/mesh"
	"github.com/clawmatrix/clawmatrix/schema"
)

// startGatewayNode starts a node the way the sidecar does under OpenClaw:
// its node key and known-nodes file in stateDir.
func startGatewayNode(t *testing.T, raw, stateDir string, logs io.Writer) *Runtime {
	t.Helper()
	cfg, problems := schema.Parse([]byte(raw))
	if len(problems) > 0 {
		t.Fatalf("config %s: %v", raw, problems)
	}
	local := mesh.DefaultLocalConfig()
	ctx, cancel := context.WithTimeout(context.Background(), testDeadline)
	defer cancel()
	rt, err := Start(ctx, Options{
		Config: cfg, WorkspaceDir: t.TempDir(), Mesh: &local, StateDir: stateDir,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close() })
	return rt
}

// getStatus reads GET /status.json from rt's proxy with key.
func getStatus(t *testing.T, rt *Runtime, key string) (int, Status, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, strings.TrimSuffix(rt.ProxyURL(), "/v1")+StatusPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var st Status
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(body, &st); err != nil {
			t.Fatalf("status is not JSON: %v\n%s", err, body)
		}
	}
	return resp.StatusCode, st, string(body)
}

func peerOf(st Status, id string) (StatusPeer, bool) {
	for _, p := range st.Peers {
		if p.ID == id {
			return p, true
		}
	}
	return StatusPeer{}, false
}

// waitStatus polls a's status until cond holds.
func waitStatus(t *testing.T, rt *Runtime, what string, cond func(Status) bool) Status {
	t.Helper()
	deadline := time.Now().Add(testDeadline)
	for {
		code, st, body := getStatus(t, rt, rt.ProxyKey())
		if code != http.StatusOK {
			t.Fatalf("GET /status.json: %d %s", code, body)
		}
		if cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; status: %s", what, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// GET /status.json shows the node, every node it reaches (direct or
// relayed) and every node it knows of that is down, with keys, and its
// recent warnings without secrets; only with the proxy key.
func TestStatusDocument(t *testing.T) {
	var logs syncBuffer
	aState := t.TempDir()
	a := startGatewayNode(t, fmt.Sprintf(`{"nodeId":"a","secret":%q,"listen":true,"listenHost":"127.0.0.1","listenPort":0,"proxyPort":0,
		"tags":["laptop"],"agents":[{"id":"main","description":"the user's assistant"}],
		"peers":[{"url":"ws://127.0.0.1:1","nodeId":"ghost"}]}`, testSecret), aState, &logs)
	b := startGatewayNode(t, fmt.Sprintf(`{"nodeId":"b","secret":%q,"listen":true,"listenHost":"127.0.0.1","listenPort":0,"proxyPort":0,
		"tags":["gpu"],"peers":[{"url":%q}],
		"models":[{"id":"qwen","provider":"vllm","upstream":{"baseUrl":"http://127.0.0.1:1/v1"}}]}`, testSecret, a.Mesh().URL()), t.TempDir(), &logs)
	c := startGatewayNode(t, fmt.Sprintf(`{"nodeId":"c","secret":%q,"proxyPort":0,"peers":[{"url":%q}],
		"agents":[{"id":"builder","description":"builds things"}]}`, testSecret, b.Mesh().URL()), t.TempDir(), &logs)

	if code, _, body := getStatus(t, a, ""); code != http.StatusUnauthorized || strings.Contains(body, `"peers"`) {
		t.Fatalf("without the key: %d %s", code, body)
	}
	if code, _, _ := getStatus(t, a, "wrong-key"); code != http.StatusUnauthorized {
		t.Fatalf("with a wrong key: %d", code)
	}

	st := waitStatus(t, a, "b direct with an RTT, c relayed via b", func(st Status) bool {
		pb, okb := peerOf(st, "b")
		pc, okc := peerOf(st, "c")
		return okb && pb.State == StateDirect && pb.RTTMs != nil && okc && pc.State == StateRelayed
	})
	keyFile, _ := schema.IdentityPaths(nil, aState, "")
	key, _, err := identity.LoadOrCreate(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	pub := identity.Public(key)
	n := st.Node
	if n.ID != "a" || n.Version != schema.Version || n.PublicKey != identity.FormatPublicKey(pub) || n.Fingerprint != identity.Fingerprint(pub) ||
		strings.Join(n.Tags, ",") != "laptop" || len(n.Agents) != 1 || n.Agents[0] != (StatusAgent{"main", "the user's assistant"}) || len(n.Models) != 0 {
		t.Errorf("node = %+v", n)
	}
	pb, _ := peerOf(st, "b")
	if pb.Fingerprint != identity.Fingerprint(b.Mesh().PublicKey()) || strings.Join(pb.Models, ",") != "qwen" || strings.Join(pb.Tags, ",") != "gpu" || pb.Revoked || pb.LastSeen != nil {
		t.Errorf("b = %+v", pb)
	}
	pc, _ := peerOf(st, "c")
	if pc.Via != "b" || pc.Fingerprint != identity.Fingerprint(c.Mesh().PublicKey()) || len(pc.Agents) != 1 || pc.Agents[0].ID != "builder" {
		t.Errorf("c = %+v", pc)
	}
	ghost, ok := peerOf(st, "ghost")
	if !ok || ghost.State != StateDown || ghost.LastSeen != nil || ghost.Fingerprint != "" || ghost.Agents == nil {
		t.Errorf("the configured peer never reached: %+v (listed %v)", ghost, ok)
	}

	// c goes away: still listed, down, with what it offered and its key.
	before := time.Now().UTC()
	c.Close()
	st = waitStatus(t, a, "c down", func(st Status) bool {
		p, ok := peerOf(st, "c")
		return ok && p.State == StateDown
	})
	pc, _ = peerOf(st, "c")
	if pc.LastSeen == nil || pc.LastSeen.Before(before.Add(-time.Second)) || pc.Fingerprint != identity.Fingerprint(c.Mesh().PublicKey()) ||
		len(pc.Agents) != 1 || pc.Via != "" || pc.RTTMs != nil {
		t.Errorf("c after it left = %+v", pc)
	}

	// Warnings and errors, newest last, with where they came from and no
	// secret.
	a.log.Warn("model proxy: the upstream answered with " + testSecret + " and " + a.ProxyKey())
	a.log.Error("something broke\nacross lines", "peer", "b")
	a.log.Info("model proxy: not an error")
	st = waitStatus(t, a, "the errors", func(st Status) bool { return len(st.LastErrors) >= 2 })
	last := st.LastErrors[len(st.LastErrors)-2:]
	if last[0].Where != "model proxy" || last[0].Message != "the upstream answered with [redacted] and [redacted]" ||
		last[1].Where != "node" || last[1].Message != "something broke across lines peer=b" || last[1].Time.IsZero() {
		t.Errorf("last errors = %+v", last)
	}
	for _, e := range st.LastErrors {
		if strings.Contains(e.Message, "not an error") {
			t.Errorf("an info line was kept: %+v", e)
		}
	}
	for i := range 30 {
		a.log.Warn(fmt.Sprintf("mesh: warning %d", i))
	}
	st = waitStatus(t, a, "the ring", func(st Status) bool { return len(st.LastErrors) == maxRecentErrors })
	if first, last := st.LastErrors[0], st.LastErrors[maxRecentErrors-1]; first.Message != "warning 10" || last.Message != "warning 29" || last.Where != "mesh" {
		t.Errorf("ring keeps %q .. %q", first.Message, last.Message)
	}
	_, _, body := getStatus(t, a, a.ProxyKey())
	for _, secret := range []string{testSecret, a.ProxyKey(), b.ProxyKey()} {
		if strings.Contains(body, secret) {
			t.Errorf("the status shows a secret: %s", body)
		}
	}
}

// The revoke command, run while the node runs, takes effect at once: the
// link to the revoked node closes with 4012, it cannot come back, and the
// status says so; trust lets it back.
func TestRevokeWhileRunning(t *testing.T) {
	var aLogs, bLogs syncBuffer
	aState := t.TempDir()
	a := startGatewayNode(t, fmt.Sprintf(`{"nodeId":"a","secret":%q,"listen":true,"listenHost":"127.0.0.1","listenPort":0,"proxyPort":0}`, testSecret), aState, &aLogs)
	b := startGatewayNode(t, fmt.Sprintf(`{"nodeId":"b","secret":%q,"proxyPort":0,"peers":[{"url":%q,"nodeId":"a"}]}`, testSecret, a.Mesh().URL()), t.TempDir(), &bLogs)
	waitStatus(t, a, "b linked", func(st Status) bool { p, ok := peerOf(st, "b"); return ok && p.State == StateDirect })

	// What `clawmatrix-plugin revoke --state DIR b` does: its own store on
	// the same file.
	_, knownFile := schema.IdentityPaths(nil, aState, "")
	command, err := identity.OpenKnownNodes(knownFile, identity.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := command.Revoke("b"); err != nil {
		t.Fatal(err)
	}
	st := waitStatus(t, a, "b down and revoked", func(st Status) bool {
		p, ok := peerOf(st, "b")
		return ok && p.State == StateDown && p.Revoked
	})
	if p, _ := peerOf(st, "b"); p.Fingerprint != identity.Fingerprint(b.Mesh().PublicKey()) {
		t.Errorf("revoked b = %+v", p)
	}
	// b heard 4012, on the cut and on every redial.
	deadline := time.Now().Add(testDeadline)
	for !strings.Contains(bLogs.String(), "code 4012") {
		if time.Now().After(deadline) {
			t.Fatalf("b never heard close code 4012; b's log:\n%s", bLogs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	refused := a.Mesh().Stats().AuthFailed
	for a.Mesh().Stats().AuthFailed < refused+2 {
		if time.Now().After(deadline) {
			t.Fatal("b stopped redialing, so its refusal was not tested")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, ok := a.Mesh().Peer("b"); ok {
		t.Fatal("revoked b is back on a")
	}
	if !strings.Contains(aLogs.String(), "cut off the nodes it no longer admits") {
		t.Errorf("a's log does not say it cut b off:\n%s", aLogs.String())
	}

	// trust undoes it.
	if err := command.Pin("b", b.Mesh().PublicKey()); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, a, "b back", func(st Status) bool { p, ok := peerOf(st, "b"); return ok && p.State == StateDirect && !p.Revoked })
}
